"""pathsegdiff: cache diffusion-model features once, train segmentation heads cheaply."""

__version__ = "0.1.0"

"""Domain pretraining: a conditioned latent diffusion model trained on unlabelled tiles.

``pretrain_paths(SOURCES, MODEL_DIR, PretrainConfig(...))`` (what
``pathsegdiff pretrain`` calls) reads the tiles, trains the first-stage
``VQModel`` then the ``UNet2DConditionModel`` + SSL projection, each stage
resumable, and writes a diffusers folder with ``ssl_projection/`` that
``extract --model MODEL_DIR`` loads (``export.py`` shows the layout).
"""

from pathsegdiff.extract.pretrain.config import AugmentConfig, PretrainConfig, StageConfig
from pathsegdiff.extract.pretrain.run import PretrainResult, pretrain, pretrain_paths
from pathsegdiff.extract.pretrain.tiles import TileBank, load_tiles, open_inputs

__all__ = ["AugmentConfig", "PretrainConfig", "PretrainResult", "StageConfig", "TileBank", "load_tiles",
           "open_inputs", "pretrain", "pretrain_paths"]

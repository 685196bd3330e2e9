"""Segmentation heads on cached features: the protocol, the built-ins (one registry) and plug-ins.

``protocol.py`` states what a head receives (:class:`HeadInputs`) and returns;
``registry.py`` maps the built-in names (fcn, linear, mlp, rgb-fcn) to their
classes; ``plugins.py`` finds, hashes and rebuilds a plug-in given as
``path/to/heads.py:Class`` or ``package.module:Class``; ``config.py`` holds
what a checkpoint saves to rebuild a head and ``build.py`` builds it.
"""

from pathsegdiff.train_head.heads.base import SegHead
from pathsegdiff.train_head.heads.build import build_head, class_path_of, head_class, load_class
from pathsegdiff.train_head.heads.config import HeadConfig, builtin_options, parse_head_args
from pathsegdiff.train_head.heads.fcn import FCNHead, RGBFCNHead
from pathsegdiff.train_head.heads.linear import LinearHead
from pathsegdiff.train_head.heads.mlp import PixelMLPEnsemble
from pathsegdiff.train_head.heads.plugins import HeadCode
from pathsegdiff.train_head.heads.protocol import Features, HeadInputs, HeadSpec, needs_rgb
from pathsegdiff.train_head.heads.registry import BUILTIN, HEAD_KINDS, is_class_path

__all__ = [
    "BUILTIN", "HEAD_KINDS", "FCNHead", "Features", "HeadCode", "HeadConfig", "HeadInputs", "HeadSpec", "LinearHead",
    "PixelMLPEnsemble", "RGBFCNHead", "SegHead", "build_head", "builtin_options", "class_path_of", "head_class",
    "is_class_path", "load_class", "needs_rgb", "parse_head_args",
]

"""Train and evaluate segmentation heads from a feature store alone.

Nothing here imports ``pathsegdiff.extract`` or ``diffusers``: a machine with
the store and no diffusion model can train and evaluate heads.  The public
face for notebooks is :mod:`pathsegdiff.train_head.api` (``open_dataset``,
``fit``, ``evaluate``, ``save_run``, ``train``); heads and their protocol are
in :mod:`pathsegdiff.train_head.heads`.
"""

from pathsegdiff.train_head.checkpoint import HeadMeta, build_head, load_head
from pathsegdiff.train_head.fit import TrainConfig
from pathsegdiff.train_head.heads import HeadConfig, HeadInputs, HeadSpec

__all__ = ["HeadConfig", "HeadInputs", "HeadMeta", "HeadSpec", "TrainConfig", "build_head", "load_head"]

"""Train and evaluate segmentation heads from a feature store alone.

Nothing here imports ``pathsegdiff.extract`` or ``diffusers``: a machine with
the store and no diffusion model can train and evaluate heads.
"""

from pathsegdiff.train_head.checkpoint import HeadMeta, build_head, load_head
from pathsegdiff.train_head.heads import HeadConfig
from pathsegdiff.train_head.fit import TrainConfig

__all__ = ["HeadConfig", "HeadMeta", "TrainConfig", "build_head", "load_head"]

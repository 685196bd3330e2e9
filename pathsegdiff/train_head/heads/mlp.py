"""The pixel-MLP ensemble of DDPM-seg (Baranchuk et al., ICLR 2022), its k members run as one.

Each pixel's feature vector is the concatenation of every selected block,
upsampled to label resolution; k small MLPs classify it and vote.  The
members' weights are stacked on a leading member axis (:mod:`stacked`): the
first layer is one matmul giving every member's units (k, h0, N) from the
shared input, each later layer one ``baddbmm``.  Memory stays bounded:

* training samples ``pixels_per_tile`` labelled pixels per tile and reads
  their feature vectors by bilinear sampling of the native-resolution maps
  (``grid_sample`` at pixel centres equals ``interpolate`` then indexing), so
  the (B, C, H, W) upsampled tensor is never built, and runs the layers on
  chunks of ``PIXELS_PER_CHUNK`` of them (:mod:`stacked` says why);
* inference reads the feature vectors the same way, for ``PIXELS_PER_CHUNK``
  pixels of one tile at a time, so its memory does not grow with the tile.
  Applying the first layer before upsampling (the two commute) needs fewer
  multiplications but upsamples k*h0 = 2560 channels instead of the stored C
  (224 in the demo), and that memory traffic made it the slower of the two
  on the CPU.

Checkpoints keep the per-member layout of the loop this replaced
(``members.<m>.first.<block>.weight``, ``members.<m>.rest.<i>.*``): ``state_dict``
splits the stacks into those keys and ``load_state_dict`` stacks them back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pathsegdiff.train_head.heads.base import SegHead
from pathsegdiff.train_head.heads.protocol import Features, HeadInputs
from pathsegdiff.train_head.heads.stacked import StackedBatchNorm, StackedLinear, normalised_linear

# Pixels per chunk the layers run on, in training (the BatchNorm statistics
# span all chunks) and at inference: 10 members x 256 units are 20 MiB.
PIXELS_PER_CHUNK = 2048


def sample_pixels(labels: torch.Tensor, count: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` labelled pixels per tile, uniformly: flat indices (B, P) and their targets (B, P).

    Slots beyond a tile's labelled pixels get the ignore value as target.
    """
    b = labels.shape[0]
    flat = labels.reshape(b, -1)
    count = min(count, flat.shape[1])
    scores = torch.rand(flat.shape, device=labels.device)
    scores[flat == ignore_index] = -1.0
    top = scores.topk(count, dim=1)
    targets = flat.gather(1, top.indices)
    targets[top.values < 0] = ignore_index
    return top.indices, targets


def gather_at(x: torch.Tensor, flat_idx: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear values of (B, C, h, w) at pixel centres of a size x size grid: (B*P, C)."""
    ys = (flat_idx // size).to(x.dtype)
    xs = (flat_idx % size).to(x.dtype)
    # Normalised pixel-centre coordinates; with align_corners=False and border
    # padding this reproduces F.interpolate(..., align_corners=False) exactly.
    grid = torch.stack([(2 * xs + 1) / size - 1, (2 * ys + 1) / size - 1], dim=-1).unsqueeze(1)  # (B, 1, P, 2)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B, C, 1, P)
    return v.squeeze(2).permute(0, 2, 1).reshape(-1, x.shape[1])


class PixelMLPEnsemble(SegHead):
    """k per-pixel MLPs; ``forward`` gives log mean probabilities, ``predict`` the majority vote.

    A member is Linear (one weight per block) -> [ReLU -> BatchNorm1d -> Linear]
    per hidden width, as in DDPM-seg.
    """

    def __init__(self, config):
        super().__init__(config)
        k, widths = config.ensemble, config.mlp_hidden
        self.first = nn.ParameterDict({name: nn.Parameter(torch.empty(k, widths[0], c))
                                       for name, c in config.in_channels.items()})
        self.first_bias = nn.Parameter(torch.zeros(k, widths[0]))
        self.norms = nn.ModuleList(StackedBatchNorm(k, w) for w in widths)
        self.linears = nn.ModuleList(StackedLinear(k, a, b, init=False)
                                     for a, b in zip(widths, (*widths[1:], config.n_classes)))
        self._init_as_separate_members()
        self.register_state_dict_post_hook(_to_member_layout)
        self.register_load_state_dict_pre_hook(_from_member_layout)

    @torch.no_grad()
    def _init_as_separate_members(self) -> None:
        """PyTorch's default initialisation, drawn in the order k separate members draw it.

        The same seed then gives the same weights as the loop over member modules
        this replaced, and so the same runs.
        """
        for m in range(self.config.ensemble):
            for w in self.first.values():
                bound = 1 / math.sqrt(w.shape[2])  # Conv2d(c, h0, 1, bias=False)'s default
                w[m].uniform_(-bound, bound)
            for linear in self.linears:
                linear.reset_member(m)

    def _logits(self, pixels: torch.Tensor, batch_stats: bool) -> torch.Tensor:
        """Every member's logits (k, K, N) from N pixels' feature vectors, each ending in a 1: (C+1, N)."""
        first = torch.cat([*(self.first[b.name] for b in self.config.blocks), self.first_bias.unsqueeze(-1)], 2)
        n = pixels.shape[1]
        # (k, h0, C+1) @ (C+1, P) per chunk of pixels: one matmul for all members, the trailing 1 adds the
        # bias.  matmul's output is no autograd view, so relu_ below stays cheap in backward.
        zs = [torch.matmul(first, pixels[:, s : s + PIXELS_PER_CHUNK]) for s in range(0, n, PIXELS_PER_CHUNK)]
        for norm, linear in zip(self.norms, self.linears):
            # In place: neither matmul's nor baddbmm's backward needs its output.
            zs = normalised_linear(norm, linear, [z.relu_() for z in zs], batch_stats)
        return torch.cat(zs, dim=2)

    def _pixels(self, stacked: list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """(C+1, B*P): the feature vectors at flat pixels ``idx`` (B, P) of the tiles, each ending in a 1."""
        gathered = [gather_at(x, idx, self.config.out_size) for x in stacked]  # (B*P, C_b) each
        return torch.cat([*gathered, gathered[0].new_ones(idx.numel(), 1)], 1).T

    def training_logits(
        self, features: HeadInputs | Features, labels: torch.Tensor, ignore_index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Member logits at sampled pixels (k*B*P, K), member-major, and their targets (k*B*P,)."""
        idx, targets = sample_pixels(labels, self.config.pixels_per_tile, ignore_index)
        logits = self._logits(self._pixels(self.stack(features), idx), batch_stats=self.training)  # (k, K, N)
        return logits.transpose(1, 2).reshape(-1, logits.shape[1]), targets.reshape(-1).repeat(len(logits))

    def member_logits(self, stacked: list[torch.Tensor]):
        """Yield (tile, pixel slice, member logits (k, K, P)) for every tile, ``PIXELS_PER_CHUNK`` pixels at a time.

        ``stacked`` is :meth:`stack`'s output.  This is inference: normalisation
        uses the running statistics whatever the mode.
        """
        n_pixels = self.config.out_size**2
        for i in range(stacked[0].shape[0]):
            tile = [x[i : i + 1] for x in stacked]
            for start in range(0, n_pixels, PIXELS_PER_CHUNK):
                pixels = slice(start, min(start + PIXELS_PER_CHUNK, n_pixels))
                idx = torch.arange(pixels.start, pixels.stop, device=tile[0].device).unsqueeze(0)  # (1, P)
                yield i, pixels, self._logits(self._pixels(tile, idx), batch_stats=False)

    def vote(self, features: HeadInputs | Features) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean probabilities (B, K, H, W), majority-vote labels (B, H, W), uncertainty (B, H, W).

        Uncertainty is the entropy of the mean prediction, as DDPM-seg reports;
        vote ties are broken by the mean probability.
        """
        stacked = self.stack(features)
        b, n_classes, size = stacked[0].shape[0], self.config.n_classes, self.config.out_size
        mean = stacked[0].new_empty(b, n_classes, size * size)
        labels = torch.empty(b, size * size, dtype=torch.long, device=mean.device)
        for i, pixels, logits in self.member_logits(stacked):
            p = logits.softmax(dim=1)  # (k, K, P)
            votes = torch.zeros_like(p[0]).scatter_add_(0, logits.argmax(dim=1), torch.ones_like(p[:, 0]))  # (K, P)
            mean[i, :, pixels] = p.mean(0)
            # mean differs by at most 1 between classes, so 0.5 * mean only breaks ties.
            labels[i, pixels] = (votes + 0.5 * mean[i, :, pixels]).argmax(dim=0)
        entropy = -(mean * mean.clamp_min(1e-12).log()).sum(dim=1)
        return mean.view(b, n_classes, size, size), labels.view(b, size, size), entropy.view(b, size, size)

    def forward(self, features: HeadInputs | Features) -> torch.Tensor:
        """Log mean probability of the members (B, K, H, W)."""
        stacked = self.stack(features)
        b, size = stacked[0].shape[0], self.config.out_size
        out = stacked[0].new_empty(b, self.config.n_classes, size * size)
        for i, pixels, logits in self.member_logits(stacked):
            out[i, :, pixels] = logits.softmax(dim=1).mean(0).clamp_min(1e-12).log()
        return out.view(b, -1, size, size)

    @torch.no_grad()
    def predict(self, features: HeadInputs | Features) -> torch.Tensor:
        return self.vote(features)[1]


def _member_keys(module: PixelMLPEnsemble) -> list[tuple[str, str]]:
    """(stacked name, per-member name with ``{m}`` for the member) of every tensor.

    The per-member names are those of the loop this module replaced: a member's
    ``rest`` was ReLU, BatchNorm1d, Linear per hidden width, so norm i sat at
    index 3i+1 and linear i at 3i+2.
    """
    pairs = [(f"first.{name}", f"members.{{m}}.first.{name}.weight") for name in module.first]
    pairs.append(("first_bias", "members.{m}.first_bias"))
    for i in range(len(module.norms)):
        pairs += [(f"norms.{i}.{t}", f"members.{{m}}.rest.{3 * i + 1}.{t}")
                  for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
        pairs += [(f"linears.{i}.{t}", f"members.{{m}}.rest.{3 * i + 2}.{t}") for t in ("weight", "bias")]
    return pairs


def _to_member_layout(module: PixelMLPEnsemble, state: dict, prefix: str, local_metadata) -> None:
    """state_dict hook: split each stack into the per-member tensors a checkpoint holds."""
    for stacked, member in _member_keys(module):
        value = state.pop(prefix + stacked)
        for m in range(module.config.ensemble):
            if stacked.endswith("num_batches_tracked"):  # one count shared by all members
                part = value
            elif stacked.startswith("first."):
                part = value[m, :, :, None, None]  # a 1x1 Conv2d weight (h0, C, 1, 1)
            else:
                part = value[m]
            # Clones: slices of one stack share memory, which safetensors refuses to save.
            state[prefix + member.format(m=m)] = part.clone()


def _from_member_layout(module: PixelMLPEnsemble, state: dict, prefix: str, *_) -> None:
    """load_state_dict hook: stack the per-member tensors; absent ones are left for strict loading to report."""
    for stacked, member in _member_keys(module):
        keys = [prefix + member.format(m=m) for m in range(module.config.ensemble)]
        if not all(key in state for key in keys):
            continue
        parts = [state.pop(key) for key in keys]
        if stacked.endswith("num_batches_tracked"):
            state[prefix + stacked] = parts[0]
        else:
            state[prefix + stacked] = torch.stack([p.flatten(1) if stacked.startswith("first.") else p for p in parts])

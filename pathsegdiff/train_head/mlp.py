"""The pixel-MLP ensemble of DDPM-seg (Baranchuk et al., ICLR 2022).

Each pixel's feature vector is the concatenation of every selected block,
upsampled to label resolution; k small MLPs classify it and vote.  Two exact
shortcuts keep memory bounded:

* training samples ``pixels_per_tile`` labelled pixels per tile and reads
  their feature vectors by bilinear sampling of the native-resolution maps
  (``grid_sample`` at pixel centres equals ``interpolate`` then indexing), so
  the (B, C, H, W) upsampled tensor is never built;
* inference applies each member's first (linear) layer at the native
  resolution of each block and upsamples its output, which equals the layer
  applied to upsampled features because bilinear upsampling is linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pathsegdiff.train_head.heads import Features, HeadConfig, SegHead


class _Member(nn.Module):
    """One MLP: a first linear layer split by block, then ReLU/BatchNorm/Linear as in DDPM-seg."""

    def __init__(self, in_channels: dict[str, int], hidden: tuple[int, ...], n_classes: int):
        super().__init__()
        h0 = hidden[0]
        self.first = nn.ModuleDict({n: nn.Conv2d(c, h0, 1, bias=False) for n, c in in_channels.items()})
        self.first_bias = nn.Parameter(torch.zeros(h0))
        layers: list[nn.Module] = [nn.ReLU(), nn.BatchNorm1d(h0)]
        for a, b in zip(hidden[:-1], hidden[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.BatchNorm1d(b)]
        layers.append(nn.Linear(hidden[-1], n_classes))
        self.rest = nn.Sequential(*layers)

    def at_pixels(self, gathered: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, C_b) per block -> (N, K)."""
        z = self.first_bias
        for name, g in gathered.items():
            w = self.first[name].weight
            z = z + F.linear(g, w.view(w.shape[0], -1))
        return self.rest(z)

    def full_map(self, blocks: dict[str, torch.Tensor], size: int) -> torch.Tensor:
        """(1, C_b, h, w) per block for one tile -> (1, K, H, W)."""
        z = self.first_bias.view(1, -1, 1, 1)
        for name, x in blocks.items():
            y = self.first[name](x)
            z = z + (y if y.shape[-1] == size else F.interpolate(y, size=(size, size), mode="bilinear",
                                                                  align_corners=False))
        n, h = z.shape[0], z.shape[1]
        logits = self.rest(z.permute(0, 2, 3, 1).reshape(-1, h))  # (H*W, K)
        return logits.view(n, size, size, -1).permute(0, 3, 1, 2)


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
    """k per-pixel MLPs; ``forward`` gives log mean probabilities, ``predict`` the majority vote."""

    def __init__(self, config: HeadConfig):
        super().__init__(config)
        self.members = nn.ModuleList(
            _Member(config.in_channels, config.mlp_hidden, config.n_classes) for _ in range(config.ensemble)
        )

    def training_logits(
        self, features: Features, labels: torch.Tensor, ignore_index: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Member logits at sampled pixels (k*B*P, K) and their targets (k*B*P,)."""
        size = self.config.out_size
        idx, targets = sample_pixels(labels, self.config.pixels_per_tile, ignore_index)
        gathered = {b.name: gather_at(x, idx, size) for b, x in zip(self.config.blocks, self.stack(features))}
        logits = torch.cat([m.at_pixels(gathered) for m in self.members])
        return logits, targets.reshape(-1).repeat(len(self.members))

    def member_probabilities(self, features: Features):
        """Yield each member's softmax (B, K, H, W), one tile at a time to bound memory."""
        stacked = dict(zip((b.name for b in self.config.blocks), self.stack(features)))
        n = next(iter(stacked.values())).shape[0]
        for m in self.members:
            yield torch.cat([
                m.full_map({k: v[i : i + 1] for k, v in stacked.items()}, self.config.out_size).softmax(dim=1)
                for i in range(n)
            ])

    def vote(self, features: Features) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean probabilities (B, K, H, W), majority-vote labels (B, H, W), uncertainty (B, H, W).

        Uncertainty is the entropy of the mean prediction, as DDPM-seg reports;
        vote ties are broken by the mean probability.
        """
        mean, votes = None, None
        for p in self.member_probabilities(features):
            one_hot = F.one_hot(p.argmax(dim=1), p.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
            mean = p if mean is None else mean + p
            votes = one_hot if votes is None else votes + one_hot
        mean = mean / len(self.members)
        # mean differs by at most 1 between classes, so 0.5 * mean only breaks ties.
        labels = (votes + 0.5 * mean).argmax(dim=1)
        entropy = -(mean * mean.clamp_min(1e-12).log()).sum(dim=1)
        return mean, labels, entropy

    def forward(self, features: Features) -> torch.Tensor:
        mean = None
        for p in self.member_probabilities(features):
            mean = p if mean is None else mean + p
        return (mean / len(self.members)).clamp_min(1e-12).log()

    @torch.no_grad()
    def predict(self, features: Features) -> torch.Tensor:
        return self.vote(features)[1]

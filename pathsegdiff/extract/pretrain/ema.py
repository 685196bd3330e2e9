"""Exponential moving averages of a stage's weights: what the exported model keeps.

The decay ramps up as ``min(decay, (1 + step) / (10 + step))`` so early
averages are not dominated by the random initialisation.  Buffers are copied,
not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Shadow copies of ``modules`` (by name), updated after each optimizer step."""

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.shadow = {name: copy.deepcopy(m).eval().requires_grad_(False) for name, m in modules.items()}

    def rate(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module], step: int) -> None:
        d = self.rate(step)
        for name, module in modules.items():
            shadow = self.shadow[name]
            for s, p in zip(shadow.parameters(), module.parameters()):
                s.lerp_(p.detach(), 1 - d)
            for s, b in zip(shadow.buffers(), module.buffers()):
                s.copy_(b)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: m.state_dict() for name, m in self.shadow.items()}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, m in self.shadow.items():
            m.load_state_dict(state[name])

"""k independent layers run as one: the building blocks of the batched pixel-MLP ensemble.

Activations are laid out (k, channels, pixels): member first, so every layer
is one batched matmul (``baddbmm``) over the member axis, and the statistics
of a BatchNorm are a reduction over the last axis.

A BatchNorm is an affine map per channel (with the batch's statistics while
training, the running ones at inference), so :func:`normalised_linear` folds
it into the weights of the linear layer that follows: ``linear(norm(x))``
without building the normalised (k, C, N) tensor, which saves a memory pass
and, while training, the activation autograd would keep for backward.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _BatchMoments(torch.autograd.Function):
    """Mean and biased variance over the last axis of (k, C, N).

    The same as ``torch.var_mean(x, dim=-1, correction=0)``, with a backward
    that allocates one tensor the size of ``x`` where autograd's allocates four
    (a training step's peak memory is set there).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        var, mean = torch.var_mean(x, dim=-1, correction=0)
        ctx.save_for_backward(x, mean)
        return mean, var

    @staticmethod
    def backward(ctx, grad_mean: torch.Tensor | None, grad_var: torch.Tensor | None) -> torch.Tensor:
        x, mean = ctx.saved_tensors
        n = x.shape[-1]
        grad_mean = torch.zeros_like(mean) if grad_mean is None else grad_mean
        grad_var = torch.zeros_like(mean) if grad_var is None else grad_var
        # d mean / dx = 1/n and d var / dx = 2 (x - mean) / n, so grad = a x + c per (member, channel).
        a = (2 / n) * grad_var
        return torch.addcmul((grad_mean / n - a * mean).unsqueeze(-1), x, a.unsqueeze(-1))


class StackedLinear(nn.Module):
    """k independent ``nn.Linear(n_in, n_out)`` layers: weight (k, out, in), bias (k, out).

    ``init=False`` leaves the weights for the owner to draw with :meth:`reset_member`.
    """

    def __init__(self, k: int, n_in: int, n_out: int, init: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, n_out, n_in))
        self.bias = nn.Parameter(torch.empty(k, n_out))
        for m in range(k if init else 0):
            self.reset_member(m)

    @torch.no_grad()
    def reset_member(self, m: int) -> None:
        """``nn.Linear``'s default initialisation of member m, drawn as it draws it (weight, then bias)."""
        bound = 1 / math.sqrt(self.weight.shape[2])
        self.weight[m].uniform_(-bound, bound)
        self.bias[m].uniform_(-bound, bound)


class StackedBatchNorm(nn.Module):
    """k independent ``nn.BatchNorm1d(channels)`` layers, statistics over the pixel axis of (k, C, N)."""

    def __init__(self, k: int, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(k, channels))
        self.bias = nn.Parameter(torch.zeros(k, channels))
        self.register_buffer("running_mean", torch.zeros(k, channels))
        self.register_buffer("running_var", torch.ones(k, channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def affine(self, x: torch.Tensor, batch_stats: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (k, C), such that the norm of ``x`` is ``x * scale + shift``.

        With ``batch_stats`` the statistics are those of ``x`` (k, C, N) and the
        running ones are updated as ``nn.BatchNorm1d`` does (unbiased variance).
        """
        if batch_stats:
            mean, var = _BatchMoments.apply(x)
            with torch.no_grad():
                n = x.shape[2]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * (n / max(n - 1, 1)), self.momentum)
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * (var + self.eps).rsqrt()
        return scale, self.bias - mean * scale


def normalised_linear(norm: StackedBatchNorm, linear: StackedLinear, x: torch.Tensor,
                      batch_stats: bool) -> torch.Tensor:
    """``linear(norm(x))`` for (k, C, N) ``x``: (k, out, N), the norm folded into the linear weights."""
    scale, shift = norm.affine(x, batch_stats)  # (k, C) each
    bias = torch.baddbmm(linear.bias.unsqueeze(-1), linear.weight, shift.unsqueeze(-1))  # (k, out, 1)
    return torch.baddbmm(bias, linear.weight * scale.unsqueeze(1), x)

"""k independent layers run as one: the building blocks of the batched pixel-MLP ensemble.

Activations are laid out (k, channels, pixels): member first, so every layer
is one batched matmul (``baddbmm``) over the member axis.  A batch of pixels
is a list of chunks of a few thousand pixels, so no activation is the size
of the whole batch (160 MiB in the demo): on the CPU a fresh tensor that size
took longer to allocate than to fill (an out-of-place ``addcmul`` over it
124 ms, the same in place 27 ms).

A BatchNorm is an affine map per channel (with the batch's statistics while
training, the running ones at inference), so :func:`normalised_linear` folds
it into the weights of the linear layer that follows: ``linear(norm(x))``
without building the normalised tensor.  While training, its backward is
written out (:class:`_BatchNormLinear`): the statistics span every chunk, and
autograd's own backward of them would allocate several more tensors the size
of the input.
"""

from __future__ import annotations

import math

import torch
from torch import nn


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

    @torch.no_grad()
    def batch_moments(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and biased variance (k, C) over the pixels of the chunks ``xs`` (k, C, n_i).

        The running statistics are updated as ``nn.BatchNorm1d`` updates them.
        """
        n = sum(x.shape[2] for x in xs)
        mean = sum(x.sum(dim=2) for x in xs) / n
        var = sum(((x - mean.unsqueeze(-1)) ** 2).sum(dim=2) for x in xs) / n  # two passes: no cancellation
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var * (n / max(n - 1, 1)), self.momentum)  # unbiased, as BatchNorm keeps it
        self.num_batches_tracked += 1
        return mean, var


def normalised_linear(norm: StackedBatchNorm, linear: StackedLinear, xs: list[torch.Tensor],
                      batch_stats: bool) -> list[torch.Tensor]:
    """``linear(norm(x))`` for x given as chunks (k, C, n_i): chunks (k, out, n_i), the norm folded in.

    ``batch_stats``: normalise with the statistics of all the chunks (training), else the running ones.
    """
    if batch_stats:
        mean, var = norm.batch_moments(xs)
        return list(_BatchNormLinear.apply(mean, var, norm.weight, norm.bias, linear.weight, linear.bias, norm.eps,
                                           *xs))
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()  # (k, C)
    shift = norm.bias - norm.running_mean * scale
    bias = torch.baddbmm(linear.bias.unsqueeze(-1), linear.weight, shift.unsqueeze(-1))  # (k, out, 1)
    folded = linear.weight * scale.unsqueeze(1)
    return [torch.baddbmm(bias, folded, x) for x in xs]


class _BatchNormLinear(torch.autograd.Function):
    """``y = W' x + b'``: a BatchNorm with x's own statistics folded into the linear layer after it.

    ``W' = W * scale`` and ``b' = b + W shift`` with ``scale = gamma / sqrt(var + eps)`` and
    ``shift = beta - mean * scale``; ``mean`` and ``var`` (k, C) are those of all the chunks
    of x, computed by the caller, and the backward counts x's path to y through them.
    """

    @staticmethod
    def forward(ctx, mean, var, gamma, beta, weight, bias, eps, *xs):
        invstd = (var + eps).rsqrt()
        scale = gamma * invstd
        shift = beta - mean * scale
        folded = weight * scale.unsqueeze(1)  # (k, out, C)
        ctx.save_for_backward(mean, invstd, gamma, scale, shift, weight, folded, *xs)
        b = torch.baddbmm(bias.unsqueeze(-1), weight, shift.unsqueeze(-1))  # (k, out, 1)
        return tuple(torch.baddbmm(b, folded, x) for x in xs)

    @staticmethod
    def backward(ctx, *grad_ys):
        mean, invstd, gamma, scale, shift, weight, folded, *xs = ctx.saved_tensors
        n = sum(x.shape[2] for x in xs)
        grad_b = sum(g.sum(dim=2) for g in grad_ys)  # (k, out): b' and b alike
        grad_folded = sum(torch.bmm(g, x.transpose(1, 2)) for g, x in zip(grad_ys, xs))  # (k, out, C)
        grad_weight = grad_folded * scale.unsqueeze(1) + grad_b.unsqueeze(2) * shift.unsqueeze(1)
        grad_shift = torch.bmm(weight.transpose(1, 2), grad_b.unsqueeze(2)).squeeze(2)  # (k, C)
        grad_scale = (grad_folded * weight).sum(dim=1) - mean * grad_shift  # shift depends on scale too
        grad_mean = -scale * grad_shift
        grad_var = -0.5 * grad_scale * gamma * invstd**3
        # x reaches y directly and through mean and var: d mean/dx = 1/n, d var/dx = 2 (x - mean)/n,
        # so the indirect part is a x + c per (member, channel), added in place.
        a = ((2 / n) * grad_var).unsqueeze(-1)
        c = (grad_mean / n).unsqueeze(-1) - a * mean.unsqueeze(-1)
        grad_xs = [torch.bmm(folded.transpose(1, 2), g).addcmul_(x, a).add_(c) for g, x in zip(grad_ys, xs)]
        return None, None, grad_scale * invstd, grad_shift, grad_weight, grad_b, None, *grad_xs

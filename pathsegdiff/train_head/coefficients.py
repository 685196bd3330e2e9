"""Heads trained on a PCA store's coefficients, saved as ordinary heads on its features.

A ``pcaK`` store holds per (timestep, block) coefficients ``c = C (x - m)``
(components C: K x Ch, mean m: Ch) and decodes features as ``C^T c + m``:
a matrix product per block per tile, which makes reading features several
times slower than reading the coefficients.  A head whose first operation on
each block is a 1x1 map ``V`` (per timestep ``V_t``) can be trained on the
coefficients instead, and composed afterwards into the same function of the
full features::

    V c + b = (V_t C_t) x + (b - sum_t V_t C_t m_t)      (c = C (x - m))

so the checkpoint is an ordinary head over the store's channels: evaluate,
predict and every other tool use it unchanged.  On decoded features
``C^T c + m`` the composed head gives the coefficient head's logits, since
the rows of C are orthonormal.  Bilinear upsampling and ``grid_sample`` are
convex combinations per channel, so they commute with the composition.

Which heads compose: fcn and rgb-fcn (``Conv2d(T*K, p, 1)`` per block) and mlp (the
first Linear) exactly; linear too: its non-affine BatchNorm over the
coefficients is a fixed affine map at evaluation, folded into the 1x1 map,
and the saved BatchNorm over the features is set to the identity.

The other direction serves evaluation (``read_path.py``): a head over the
features ``x = C^T c + m`` (``c`` the stored coefficients) is the same
function of ``c`` with its first map ``V`` (per timestep ``V_t``) replaced::

    V x + b = (V_t C_t^T) c + (b + sum_t V_t m_t)

so ``evaluate`` and ``predict`` read the coefficients instead of decoding
every tile (:func:`coefficient_head`).  That holds for any such head, since
``C^T c + m`` is exactly what decoding computes; the same four kinds compose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from pathsegdiff.errors import ConfigError
from pathsegdiff.store import open_store
from pathsegdiff.store.encodings import PCABasis
from pathsegdiff.store.schema import BlockSpec
from pathsegdiff.train_head.heads import BUILTIN, FCNHead, HeadConfig, LinearHead, PixelMLPEnsemble, SegHead, build_head
from pathsegdiff.train_head.store_set import as_wheres

Bases = Mapping[tuple[int, str], PCABasis]


def store_bases(where: str | Sequence[str], head: str) -> tuple[dict[tuple[int, str], PCABasis], dict[str, Any]]:
    """The PCA bases of the (first) store and what a run records of them; refuses what cannot be composed.

    Stores read as one share their identity, which names the bases (``basis_sha256``), so the first one's
    bases are every store's.
    """
    if head not in COMPOSERS:
        raise ConfigError(f"--coefficients: the {head} head has no first 1x1 layer that composes with the PCA "
                          f"projection; heads that take coefficients: {', '.join(COMPOSERS)}")
    fs = open_store(as_wheres(where)[0])
    enc = fs.encoding
    if not enc.encoding.uses_pca:
        raise ConfigError(f"{fs.location}: --coefficients needs a PCA store (pcaK or pcaK-int8), this one is "
                          f"{enc.encoding.name}; compact it with 'pathsegdiff store compact --compact pca64-int8' "
                          "or train without --coefficients")
    record = {"encoding": enc.encoding.name, "basis_sha256": fs.schema.features.basis_sha256}
    return dict(enc.bases), record


def coefficient_config(config: HeadConfig, bases: Bases) -> HeadConfig:
    """The head config over coefficients: each block has K channels (the same K at every timestep)."""
    blocks = []
    for b in config.blocks:
        ks = {bases[(t, b.name)].k for t in config.timesteps}
        if len(ks) != 1:
            raise ConfigError(f"block {b.name}: its PCA bases keep {sorted(ks)} components at different timesteps")
        blocks.append(BlockSpec(b.name, ks.pop(), b.height, b.width))
    return replace(config, blocks=tuple(blocks))


def compose_first(v: torch.Tensor, config: HeadConfig, block: str, bases: Bases) -> tuple[torch.Tensor, torch.Tensor]:
    """A first-layer weight ``v`` (..., T*K) on coefficients -> (..., T*Ch) on features, and the bias shift (...,).

    The composed map gives ``v c`` for ``c = C (x - m)``: weight ``v_t C_t`` per timestep, shift
    ``-sum_t v_t C_t m_t`` (computed in float64, returned in v's dtype).
    """
    return _first_map(v, config, block, bases, onto_coefficients=False)


def first_on_coefficients(v: torch.Tensor, config: HeadConfig, block: str,
                          bases: Bases) -> tuple[torch.Tensor, torch.Tensor]:
    """A first-layer weight ``v`` (..., T*Ch) on features -> (..., T*K) on coefficients, and the bias shift (...,).

    On ``x = C^T c + m`` (what decoding gives) the map gives ``v x``: weight ``v_t C_t^T`` per timestep, shift
    ``sum_t v_t m_t`` (computed in float64, returned in v's dtype).
    """
    return _first_map(v, config, block, bases, onto_coefficients=True)


def _first_map(v: torch.Tensor, config: HeadConfig, block: str, bases: Bases,
               onto_coefficients: bool) -> tuple[torch.Tensor, torch.Tensor]:
    v64, parts, shift = v.double(), [], 0
    start = 0
    for t in config.timesteps:
        basis = bases[(t, block)]
        comps = torch.from_numpy(basis.components).double().to(v.device)  # (K, Ch)
        mean = torch.from_numpy(basis.mean).double().to(v.device)  # (Ch,)
        if onto_coefficients:
            v_t = v64[..., start : start + basis.channels]  # (..., Ch)
            parts.append(v_t @ comps.T)  # (..., K)
            shift = shift + v_t @ mean
            start += basis.channels
        else:
            w_t = v64[..., start : start + basis.k] @ comps  # (..., Ch)
            parts.append(w_t)
            shift = shift - w_t @ mean
            start += basis.k
    return torch.cat(parts, dim=-1).to(v.dtype), shift.to(v.dtype)


FirstMap = Callable[[torch.Tensor, str], tuple[torch.Tensor, torch.Tensor]]  # (weight, block) -> (weight, shift)


def _compose_fcn(src: FCNHead, dst: FCNHead, first: FirstMap) -> None:
    for b in src.config.blocks:
        conv_src, conv_dst = src.project[b.name][0], dst.project[b.name][0]
        w, shift = first(conv_src.weight[:, :, 0, 0], b.name)  # (p, T*C'), (p,)
        conv_dst.weight.copy_(w[:, :, None, None])
        conv_dst.bias.copy_(conv_src.bias + shift)


def _compose_linear(src: LinearHead, dst: LinearHead, first: FirstMap) -> None:
    bias = src.bias.detach().double()
    for b in src.config.blocks:
        norm = src.norm[b.name]  # at evaluation: (x - running_mean) * scale
        scale = (norm.running_var.double() + norm.eps).rsqrt()
        v = src.weight[b.name].weight[:, :, 0, 0].double() * scale  # (classes, T*C), the norm folded in
        bias = bias - v @ norm.running_mean.double()
        w, shift = first(v, b.name)
        dst.weight[b.name].weight.copy_(w[:, :, None, None])
        bias = bias + shift
        identity = dst.norm[b.name]  # the composed norm passes its input through: (x - 0) / sqrt(1 - eps + eps)
        identity.running_mean.zero_()
        identity.running_var.fill_(1.0 - identity.eps)
    dst.bias.copy_(bias)


def _compose_mlp(src: PixelMLPEnsemble, dst: PixelMLPEnsemble, first: FirstMap) -> None:
    bias = src.first_bias.detach().clone()
    for b in src.config.blocks:
        w, shift = first(src.first[b.name], b.name)  # (k, h0, T*C'), (k, h0)
        dst.first[b.name].copy_(w)
        bias = bias + shift
    dst.first_bias.copy_(bias)


COMPOSERS: dict[str, Callable[[Any, Any, FirstMap], None]] = {
    "fcn": _compose_fcn, "linear": _compose_linear, "mlp": _compose_mlp, "rgb-fcn": _compose_fcn,
}


def composes(head: nn.Module) -> bool:
    """Whether ``head`` is a built-in head whose first layer composes with a PCA basis (either direction)."""
    config = getattr(head, "config", None)
    return (isinstance(config, HeadConfig) and config.kind in COMPOSERS
            and type(head) is BUILTIN.get(config.kind))


@torch.no_grad()
def compose_head(head: SegHead, config: HeadConfig, bases: Bases) -> SegHead:
    """The head ``head`` (trained on coefficients) as a head of ``config`` on the full features, in eval mode.

    Every tensor but the first layer is copied as it is; the first layer is composed with the bases.
    """
    if head.config.kind not in COMPOSERS or config.kind != head.config.kind:
        raise ConfigError(f"cannot compose a {head.config.kind} head into a {config.kind} head")
    return _rebuilt(head, config, lambda v, block: compose_first(v, head.config, block, bases))


@torch.no_grad()
def coefficient_head(head: SegHead, bases: Bases) -> SegHead:
    """The head ``head`` (over a PCA store's features) as the same function of the store's coefficients, in eval
    mode: its input blocks have K channels (:func:`coefficient_config`), its first layer is
    :func:`first_on_coefficients` of ``head``'s.  ``head`` is read in eval mode (the linear probe's BatchNorm
    statistics are folded in)."""
    if not composes(head):
        raise ConfigError(f"the {type(head).__qualname__} head does not compose onto PCA coefficients; "
                          f"heads that do: {', '.join(COMPOSERS)}")
    config = coefficient_config(head.config, bases)
    return _rebuilt(head, config, lambda v, block: first_on_coefficients(v, head.config, block, bases))


def _rebuilt(head: SegHead, config: HeadConfig, first: FirstMap) -> SegHead:
    """A fresh ``config`` head with every tensor of ``head`` that keeps its shape, and the first layer mapped."""
    param = next(head.parameters())
    with torch.random.fork_rng(devices=[]):  # composing mid-training must not move the seeded draws of the fit
        out = build_head(config).to(device=param.device, dtype=param.dtype)
    targets = {**dict(out.named_parameters()), **dict(out.named_buffers())}
    for name, value in [*head.named_parameters(), *head.named_buffers()]:
        if targets[name].shape == value.shape:
            targets[name].copy_(value)
    COMPOSERS[config.kind](head, out, first)
    return out.eval()

"""Training losses on logits: cross-entropy or focal loss, optionally class-weighted, plus a soft Dice term.

``logits`` is (B, K, H, W) with targets (B, H, W), or (N, K) with targets (N,)
(the pixel-MLP's sampled pixels).  Pixels whose target is the ignore value
take no part.  With class weights ``w``, both losses are weighted means over
the labelled pixels: ``sum_i w[y_i] l_i / sum_i w[y_i]`` (PyTorch's weighted
cross-entropy); focal loss is ``l_i = -(1 - p_i)^gamma log p_i`` with ``p_i``
the probability of the true class (Lin et al. 2017), so gamma 0 gives
cross-entropy.

``auto`` class weights are the inverse pixel frequencies of the tiles the run
trains on: ``w_k = (1 / f_k) / mean_j (1 / f_j)`` over the classes present,
``f_k`` the share of labelled pixels of class k.  They average 1 over the
present classes (the weighted mean makes only their ratios matter for the
loss; the scale keeps them readable); a class absent from those pixels gets
weight 0, which no target ever uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pathsegdiff.errors import ConfigError

LOSSES = ("ce", "focal")


def parse_class_weights(value: str | Sequence[float] | None) -> str | tuple[float, ...] | None:
    """None, ``"auto"``, or weights ``"w1,w2,..."`` (each >= 0, not all 0)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "none")):
        return None
    if isinstance(value, str) and value.strip() == "auto":
        return "auto"
    try:
        ws = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ConfigError(f"class weights {value!r}: give auto or one number per class (1,2.5,1)") from None
    if not ws or any(not np.isfinite(w) or w < 0 for w in ws) or not any(ws):
        raise ConfigError(f"class weights {value!r}: each must be a finite number >= 0, and not all 0")
    return ws


def auto_class_weights(counts: Sequence[int]) -> np.ndarray:
    """Inverse pixel frequencies, averaging 1 over the classes present; 0 for an absent class."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ConfigError("class weights auto: the training tiles hold no labelled pixel")
    inverse = np.zeros_like(counts)
    inverse[present] = counts.sum() / counts[present]
    return inverse / inverse[present].mean()


def segmentation_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, dice_weight: float = 0.0, *,
    loss: str = "ce", weights: torch.Tensor | None = None, gamma: float = 2.0,
) -> torch.Tensor | None:
    """Cross-entropy or focal loss over labelled pixels (+ soft Dice); None when no pixel is labelled."""
    valid = targets != ignore_index
    if not bool(valid.any()):
        return None
    if weights is not None:
        weights = weights.to(device=logits.device, dtype=logits.dtype)
        if not bool(weights[targets[valid]].sum() > 0):  # every labelled pixel weighs 0: nothing to learn here
            return None
    if loss == "ce":
        out = F.cross_entropy(logits, targets, weight=weights, ignore_index=ignore_index)
    elif loss == "focal":
        out = focal_loss(logits, targets, ignore_index, weights, gamma)
    else:
        raise ConfigError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if dice_weight > 0:
        out = out + dice_weight * soft_dice_loss(logits, targets, valid)
    return out


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, weights: torch.Tensor | None,
               gamma: float) -> torch.Tensor:
    """``sum w[y] (1 - p)^gamma (-log p) / sum w[y]`` over the labelled pixels."""
    k = logits.shape[1]
    flat = (logits.movedim(1, -1) if logits.dim() > 2 else logits).reshape(-1, k)
    t = targets.reshape(-1)
    keep = t != ignore_index
    logp = flat[keep].log_softmax(-1).gather(1, t[keep, None]).squeeze(1)  # log p of the true class
    term = -((1 - logp.exp()).clamp_min(0) ** gamma) * logp
    w = weights[t[keep]] if weights is not None else torch.ones_like(term)
    return (w * term).sum() / w.sum().clamp_min(torch.finfo(term.dtype).tiny)


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - the mean over classes of the soft Dice of the labelled pixels' probabilities (+1 smoothing)."""
    k = logits.shape[1]
    probs = (logits.movedim(1, -1) if logits.dim() > 2 else logits).reshape(-1, k).softmax(-1)
    keep = valid.reshape(-1)
    probs, onehot = probs[keep], F.one_hot(targets.reshape(-1)[keep], k).to(probs.dtype)
    inter, denom = (probs * onehot).sum(0), probs.sum(0) + onehot.sum(0)
    return 1 - ((2 * inter + 1) / (denom + 1)).mean()

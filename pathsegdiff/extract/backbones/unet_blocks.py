"""The blocks of a diffusers ``UNet2DConditionModel`` and a forward that stops after the last one needed.

Block names, in the order the UNet computes them:

- ``mid``: output of the middle block (coarsest resolution).
- ``up{i}.pre``: decoder level ``i`` (0 = coarsest) at its own resolution,
  i.e. the input of its upsampler.  Only levels that have an upsampler.
- ``up{i}``: output of decoder level ``i`` as diffusers' ``up_blocks[i]``
  returns it, i.e. after its upsampler (twice the ``.pre`` resolution);
  the last level has no upsampler and is at the latent resolution.

For the reference UNet on a 256 px tile: mid 960x8x8, up0.pre 960x8x8,
up0 960x16x16, up1 576x32x32, up2 384x64x64, up3 192x64x64.

:func:`partial_forward` follows ``UNet2DConditionModel.forward`` step for
step for the UNets we load (no class, added or ControlNet embeddings: the
loaders refuse those) and returns after the last requested block, so the
rest of the decoder is never computed and no exception unwinds the forward
(``torch.compile`` can trace it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def unet_blocks(unet: nn.Module) -> list[str]:
    names = ["mid"] if getattr(unet, "mid_block", None) is not None else []
    for i, block in enumerate(unet.up_blocks):
        if block.upsamplers:
            names.append(f"up{i}.pre")
        names.append(f"up{i}")
    return names


def unet_block_shapes(unet: nn.Module, latent_size: int) -> dict[str, tuple[int, int, int]]:
    """(C, h, w) of every block for a square latent of ``latent_size``, by arithmetic on the layout."""
    res = latent_size // 2 ** sum(1 for b in unet.down_blocks if b.downsamplers)
    shapes: dict[str, tuple[int, int, int]] = {}
    if unet.mid_block is not None:
        shapes["mid"] = (unet.mid_block.resnets[-1].out_channels, res, res)
    for i, block in enumerate(unet.up_blocks):
        channels = block.resnets[-1].out_channels
        if block.upsamplers:
            shapes[f"up{i}.pre"] = (channels, res, res)
            res *= 2
        shapes[f"up{i}"] = (channels, res, res)
    return shapes


def unet_stride(unet: nn.Module) -> int:
    """Latent pixels per coarsest-level pixel: the latent size must be a multiple of it."""
    return 2 ** sum(1 for b in unet.down_blocks if b.downsamplers)


def _cross(block: nn.Module) -> bool:
    return bool(getattr(block, "has_cross_attention", False))


def partial_forward(unet: nn.Module, sample: torch.Tensor, timestep: int, context: torch.Tensor,
                    blocks: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run ``unet`` on ``sample`` (B, c, h, w) at ``timestep`` up to the last of ``blocks``; return those blocks."""
    wanted = set(blocks)
    last = max(blocks, key=unet_blocks(unet).index)
    out: dict[str, torch.Tensor] = {}
    t = torch.full((sample.shape[0],), timestep, device=sample.device, dtype=torch.long)
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t), None)
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    h = unet.conv_in(sample)
    skips = (h,)
    for down in unet.down_blocks:
        if _cross(down):
            h, res = down(hidden_states=h, temb=emb, encoder_hidden_states=context)
        else:
            h, res = down(hidden_states=h, temb=emb)
        skips += res
    if unet.mid_block is not None:
        h = unet.mid_block(h, emb, encoder_hidden_states=context) if _cross(unet.mid_block) else unet.mid_block(h, emb)
        out["mid"] = h
        if last == "mid":
            return {name: out[name] for name in blocks}
    for i, up in enumerate(unet.up_blocks):
        res, skips = skips[-len(up.resnets):], skips[: -len(up.resnets)]
        handle = None
        if f"up{i}.pre" in wanted:  # the upsampler's input: the level at its own resolution
            handle = up.upsamplers[0].register_forward_pre_hook(
                lambda m, args, kwargs, name=f"up{i}.pre": out.__setitem__(
                    name, args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        try:
            if _cross(up):
                h = up(hidden_states=h, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=context)
            else:
                h = up(hidden_states=h, temb=emb, res_hidden_states_tuple=res)
        finally:
            if handle is not None:
                handle.remove()
        out[f"up{i}"] = h
        if last in (f"up{i}", f"up{i}.pre"):
            break
    return {name: out[name] for name in blocks}

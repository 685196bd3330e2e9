"""The diffusion-transformer backbone (:class:`DiT`): a PixArt-style transformer over a VAE latent.

Block names, in the order the transformer computes them:

- ``block{i}``, i = 0 .. N-1: the hidden states after ``transformer_blocks[i]``
  of diffusers' ``PixArtTransformer2DModel``, its (B, h*w, C) tokens laid
  back on the patch grid as (B, C, h, w).  C = heads x head dim, and
  h = w = tile / (VAE downsample x patch size): every block has the same shape.

For tiny-dit on a 256 px tile: block0 .. block3, each 32x16x16.

Conditioning follows PixCell on UNI: the per-tile (B, ssl_dim) embedding is
one caption token, projected by the transformer's ``caption_projection``
(``caption_channels`` = ssl_dim) and attended to by every block's cross
attention.  The null condition is a zero embedding.

:meth:`DiT.forward_blocks` follows ``PixArtTransformer2DModel.forward`` step
for step (patch embedding, adaLN-single timestep embedding, caption
projection, blocks; no attention masks, as for one caption token) and
returns after the last requested block, so the rest is never computed.

:class:`ClassConditionalDiT` is the class-conditional DiT (diffusers'
``DiTTransformer2DModel``, ``norm_type: ada_norm_zero``, as
facebook/DiT-XL-2-256): the same blocks, conditioned on a class label
through each block's adaLN-zero instead of a caption token.  It is run under
its null class, the label index ``num_embeds_ada_norm`` that DiT learnt for
dropped labels (10 % of training, for classifier-free guidance), so its
features are its unconditional ones, and an SSL embedding is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pathsegdiff.errors import ConfigError, ModelLoadError
from pathsegdiff.extract.backbones.base import Backbone


class DiT(Backbone):
    """A latent diffusion transformer: an ``AutoencoderKL``, a ``PixArtTransformer2DModel`` and a noise schedule.

    ``encode`` takes the VAE posterior mean, not a sample, so a tile always
    has the same latent; then ``(mean - shift_factor) * scaling_factor`` as
    the diffusers pipelines scale latents.  The loaders in ``dit.py`` build it.
    """

    def __init__(self, *, model_id: str, weights_sha256: str, config_sha256: str, transformer: nn.Module,
                 vae: nn.Module, alphas_cumprod: torch.Tensor, untrained: bool = False, notes: tuple[str, ...] = ()):
        self.check_conditioning(model_id, transformer)
        if transformer.config.in_channels != vae.config.latent_channels:
            raise ModelLoadError(f"{model_id}: transformer in_channels {transformer.config.in_channels} != "
                                 f"VAE latent_channels {vae.config.latent_channels}")
        self.model_id = model_id
        self.weights_sha256 = weights_sha256
        self.config_sha256 = config_sha256
        self.transformer = transformer.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.alphas_cumprod = alphas_cumprod
        self.untrained = untrained
        self.notes = notes
        self.ssl_dim = self.embedding_width(transformer)
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.patch_size = int(transformer.config.patch_size)
        self.scaling_factor = float(vae.config.get("scaling_factor") or 1.0)
        self.shift_factor = float(vae.config.get("shift_factor") or 0.0)
        # Two middle-to-late blocks (N/2 and 3N/4: block14 and block21 of PixArt's 28), as DDPM-seg found the
        # middle-to-late decoder blocks the most useful for segmentation: early blocks are close to the
        # patch embedding, late ones specialise in predicting the noise.
        n = len(transformer.transformer_blocks)
        self.default_blocks = tuple(dict.fromkeys(f"block{i}" for i in (n // 2, (3 * n) // 4)))

    def check_conditioning(self, model_id: str, transformer: nn.Module) -> None:
        if getattr(transformer, "caption_projection", None) is None:
            raise ModelLoadError(f"{model_id}: the transformer has no caption projection (caption_channels is "
                                 "null); a DiT here is conditioned on a per-tile embedding, as PixCell is on UNI")

    def embedding_width(self, transformer: nn.Module) -> int:
        return int(transformer.config.caption_channels)

    def modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.transformer, "vae": self.vae}

    def blocks(self) -> list[str]:
        return [f"block{i}" for i in range(len(self.transformer.transformer_blocks))]

    def block_shapes(self, tile_size: int) -> dict[str, tuple[int, int, int]]:
        step = self.downsample * self.patch_size
        if tile_size % step:
            raise ConfigError(f"tile size {tile_size} must be a multiple of {step} for model {self.model_id} "
                              f"(VAE downsample {self.downsample} x patch size {self.patch_size})")
        n = tile_size // step
        return {name: (self.transformer.inner_dim, n, n) for name in self.blocks()}

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb float in [-1, 1], (B, 3, H, W) -> scaled posterior mean (B, c, H/f, W/f)."""
        param = next(self.vae.parameters())
        mean = self.vae.encode(rgb.to(device=param.device, dtype=param.dtype)).latent_dist.mean
        return (mean - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def context(self, ssl: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, ssl_dim) embedding or None (null: zeros) -> (B, 1, ssl_dim), one caption token per tile."""
        weight = self.transformer.caption_projection.linear_1.weight
        if ssl is None:
            ssl = torch.zeros(batch, self.ssl_dim)
        if tuple(ssl.shape) != (batch, self.ssl_dim):
            raise ModelLoadError(
                f"{self.model_id}: conditioning embedding has shape {tuple(ssl.shape)}, expected ({batch}, {self.ssl_dim})"
            )
        return ssl.to(device=weight.device, dtype=weight.dtype)[:, None, :]

    def _added_cond_kwargs(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """PixArt-alpha 1024's size conditioning: the image size in pixels and its aspect ratio, as its pipeline."""
        if not self.transformer.use_additional_conditions:
            return {"resolution": None, "aspect_ratio": None}
        batch, height, width = x.shape[0], x.shape[-2] * self.downsample, x.shape[-1] * self.downsample
        return {"resolution": torch.tensor([height, width], device=x.device, dtype=x.dtype).repeat(batch, 1),
                "aspect_ratio": torch.tensor([height / width], device=x.device, dtype=x.dtype).repeat(batch, 1)}

    @torch.no_grad()
    def forward_blocks(self, x: torch.Tensor, timestep: int, context: torch.Tensor | None,
                       blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        self.check_blocks(blocks)
        tr = self.transformer
        last = self.blocks().index(self.last_block(blocks))
        wanted = set(blocks)
        batch, p = x.shape[0], self.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        if context is None:
            context = self.context(None, batch)
        hidden = tr.pos_embed(x)  # (B, h*w, C), sin-cos position embedding added
        t = torch.full((batch,), timestep, device=x.device, dtype=torch.long)
        t_mod, _ = tr.adaln_single(t, self._added_cond_kwargs(x), batch_size=batch, hidden_dtype=hidden.dtype)
        tokens = tr.caption_projection(context).view(batch, -1, hidden.shape[-1])  # (B, 1, C)
        out: dict[str, torch.Tensor] = {}
        for i, block in enumerate(tr.transformer_blocks[: last + 1]):
            hidden = block(hidden, attention_mask=None, encoder_hidden_states=tokens, encoder_attention_mask=None,
                           timestep=t_mod, cross_attention_kwargs=None, class_labels=None)
            if f"block{i}" in wanted:  # tokens are row-major over the patch grid, as PatchEmbed flattens them
                out[f"block{i}"] = hidden.transpose(1, 2).reshape(batch, -1, h, w)
        return {name: out[name] for name in blocks}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "patch_size": self.patch_size, "layers": len(self.blocks()),
                "width": int(self.transformer.inner_dim), "scaling_factor": self.scaling_factor,
                "shift_factor": self.shift_factor}


class ClassConditionalDiT(DiT):
    """A class-conditional DiT (``DiTTransformer2DModel``), run under its null class: its unconditional features."""

    def check_conditioning(self, model_id: str, transformer: nn.Module) -> None:
        table = transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table
        self.null_class = int(transformer.config.num_embeds_ada_norm)
        if table.num_embeddings != self.null_class + 1:
            raise ModelLoadError(f"{model_id}: the class embedding has {table.num_embeddings} rows for "
                                 f"{self.null_class} classes: no null-class row to run it unconditionally")

    def embedding_width(self, transformer: nn.Module) -> int:
        return 0  # conditioned on a class label, not on an SSL embedding

    @torch.no_grad()
    def context(self, ssl: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B,) the null class label, whatever the (B, 0) embedding of the null conditioner."""
        return torch.full((batch,), self.null_class, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def forward_blocks(self, x: torch.Tensor, timestep: int, context: torch.Tensor | None,
                       blocks: Sequence[str]) -> dict[str, torch.Tensor]:
        """``DiTTransformer2DModel.forward`` up to the last requested block: patch embedding, then blocks with
        the timestep and class label (each block's adaLN-zero embeds both)."""
        self.check_blocks(blocks)
        tr = self.transformer
        last = self.blocks().index(self.last_block(blocks))
        batch, p = x.shape[0], self.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        labels = self.context(None, batch) if context is None else context
        hidden = tr.pos_embed(x)  # (B, h*w, C)
        t = torch.full((batch,), timestep, device=x.device, dtype=torch.long)
        out: dict[str, torch.Tensor] = {}
        for i, block in enumerate(tr.transformer_blocks[: last + 1]):
            hidden = block(hidden, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                           timestep=t, cross_attention_kwargs=None, class_labels=labels)
            if f"block{i}" in blocks:
                out[f"block{i}"] = hidden.transpose(1, 2).reshape(batch, -1, h, w)
        return {name: out[name] for name in blocks}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "class_label": self.null_class, "class_label_is": "null (unconditional)"}

"""Vision transformer tower (timm blocks) with an optional MAE decoder; VLC's key names.

Two flavours, chosen by the ``vit`` config name:

* ``mae_vit_*`` (VLC): fixed 2-D sin-cos ``pos_embed`` (not trained, CLS row zeros), no dropout,
  MAE initialisation (xavier-uniform Linear and patch projection, N(0, 0.02) tokens).
* ``vit_*`` (ViLT): learned ``pos_embed``, dropout ``drop_rate`` after the embedding and in every
  block, timm initialisation (truncated N(0, 0.02)). It takes ViLT's inputs (``vlkit.models.
  vilt_inputs``): images of any size that is a multiple of the patch, zero-padded in a batch,
  with per-image patch masks, the position table (``vilt_pos_grid``; ViLT's 12 x 12) resized to
  each image's grid at every forward, and ``max_image_len`` patch sampling.

Both use LayerNorm eps 1e-6 and qkv bias; every attention goes through
``F.scaled_dot_product_attention`` with a boolean key-padding mask.
"""
from __future__ import annotations

import logging
import re
from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from vlkit.models.masking import patchify, random_masking
from vlkit.models.pos_embed import sincos_2d
from vlkit.models.token_reduction import TokenPruner, token_pruner_from_config
from vlkit.models.vilt_inputs import interpolated_positions, sample_patches, valid_patch_grid

log = logging.getLogger(__name__)

LAYER_NORM = partial(nn.LayerNorm, eps=1e-6)


def vit_flavour(vit: str, patch_size: int) -> str:
    """``"mae"`` or ``"vilt"`` for a ``vit`` config name; warns when its ``patchN`` is not patch_size."""
    if vit.startswith("mae_vit_"):
        flavour = "mae"
    elif vit.startswith("vit_"):
        flavour = "vilt"
    else:
        raise ValueError(
            f"config key vit={vit!r}: expected a name starting with 'mae_vit_' (VLC, fixed sin-cos "
            "positions) or 'vit_' (ViLT, learned positions), e.g. 'mae_vit_base_patch16'"
        )
    named = re.search(r"patch(\d+)", vit)
    if named and int(named.group(1)) != patch_size:
        log.warning(
            "vit=%r names patch %s but patch_size=%d: building %d-px patches (patch_size decides, "
            "so that size presets such as `tiny` compose with any backbone preset)",
            vit, named.group(1), patch_size, patch_size,
        )
    return flavour


def _blocks(dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> nn.ModuleList:
    blocks = nn.ModuleList(
        Block(dim, heads, mlp_ratio, qkv_bias=True, proj_drop=dropout, norm_layer=LAYER_NORM)
        for _ in range(depth)
    )
    for block in blocks:
        block.attn.fused_attn = True  # always SDPA, whatever timm's global setting
    return blocks


def _run_blocks(blocks: nn.ModuleList, x: torch.Tensor, key_padding_mask: torch.Tensor | None):
    attn_mask = None if key_padding_mask is None else key_padding_mask.bool()[:, None, None, :]
    for block in blocks:
        x = block(x, attn_mask=attn_mask)
    return x


def _xavier_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _trunc_normal_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class VisionTransformer(nn.Module):
    """Patch embedding, encoder blocks and final norm; the MAE decoder when ``decoder_dim`` > 0."""

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        learned_pos: bool = False,
        drop_rate: float = 0.0,
        decoder_dim: int = 0,
        decoder_depth: int = 0,
        decoder_heads: int = 1,
        pos_grid: int = 0,
        vilt_inputs: bool = False,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not a multiple of patch_size={patch_size}; "
                "pick an image_size divisible by the patch size"
            )
        self.image_size, self.patch_size = image_size, patch_size
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.learned_pos = learned_pos
        self.vilt_inputs = vilt_inputs
        """ViLT's inputs: any image size, per-image patch masks, positions resized at every forward."""
        self.pos_grid = pos_grid or self.grid_size
        if self.pos_grid != self.grid_size and not vilt_inputs:
            raise ValueError(f"vilt_pos_grid={pos_grid} applies to ViLT's vit_* towers only; set vilt_pos_grid=0")

        self.patch_embed = PatchEmbed(image_size, patch_size, 3, dim, strict_img_size=not self.vilt_inputs)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, 1 + self.pos_grid**2, dim), requires_grad=learned_pos
        )
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = _blocks(dim, depth, num_heads, mlp_ratio, drop_rate)
        self.norm = LAYER_NORM(dim)
        self.token_pruner: TokenPruner | None = None
        """ELIP pruning of the encoder blocks (``token_reduction.token_pruner_from_config``), or None."""

        self.has_decoder = decoder_dim > 0
        if self.has_decoder:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
            self.decoder_embed = nn.Linear(dim, decoder_dim)
            self.decoder_pos_embed = nn.Parameter(
                torch.zeros(1, 1 + self.num_patches, decoder_dim), requires_grad=False
            )
            self.decoder_blocks = _blocks(decoder_dim, decoder_depth, decoder_heads, mlp_ratio, 0.0)
            self.decoder_norm = LAYER_NORM(decoder_dim)
            self.decoder_pred = nn.Linear(decoder_dim, patch_size * patch_size * 3)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.learned_pos:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            self.apply(_trunc_normal_linear)
        else:
            self.pos_embed.data.copy_(sincos_2d(self.pos_embed.shape[-1], self.grid_size))
            proj = self.patch_embed.proj.weight
            nn.init.xavier_uniform_(proj.data.view(proj.shape[0], -1))
            nn.init.normal_(self.cls_token, std=0.02)
            self.apply(_xavier_linear)
        if self.has_decoder:
            table = sincos_2d(self.decoder_pos_embed.shape[-1], self.grid_size)
            self.decoder_pos_embed.data.copy_(table)
            nn.init.normal_(self.mask_token, std=0.02)

    def embed(
        self, images: torch.Tensor, mask_ratio: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Image tokens (B, 1 + K, D): CLS then K patches, with positions.

        With ``mask_ratio`` > 0 a random ``mask_ratio`` of the patches is dropped (global RNG) and
        ``mask`` (B, N; 1 = removed) and ``ids_restore`` (B, N) are returned, else two ``None``.
        """
        self._check_images(images)
        if self.vilt_inputs:  # every patch real: the table resized to the batch grid
            height, width = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
            sides = torch.full((images.shape[0],), height), torch.full((images.shape[0],), width)
            positions = interpolated_positions(self.pos_embed[:, 1:], (self.pos_grid, self.pos_grid), *sides,
                                               height, width)
        else:
            positions = self.pos_embed[:, 1:]
        x = self.patch_embed(images) + positions
        mask = ids_restore = None
        if mask_ratio > 0:
            x, mask, ids_restore = random_masking(x, mask_ratio)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.pos_drop(torch.cat([cls, x], dim=1)), mask, ids_restore

    def _check_images(self, images: torch.Tensor) -> None:
        if self.vilt_inputs:
            if images.dim() != 4 or images.shape[-2] % self.patch_size or images.shape[-1] % self.patch_size:
                raise ValueError(
                    f"image batch of shape {tuple(images.shape)}: ViLT's tower takes (B, 3, H, W) with H and W "
                    f"multiples of patch_size={self.patch_size} (the pixelbert transforms give them)"
                )
            return
        expected = (self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[-2:]) != expected:
            raise ValueError(
                f"image batch of shape {tuple(images.shape)}, but the vision tower was built for "
                f"(B, 3, {self.image_size}, {self.image_size}); set image_size={images.shape[-1]} "
                "or resize the images"
            )

    def embed_vilt(self, images: torch.Tensor, max_image_len: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        """ViLT's image tokens of a zero-padded batch (``vlkit.models.vilt_inputs``): ``tokens``
        (B, 1 + K, D), CLS first, and ``masks`` (B, 1 + K), 0 on padding patches."""
        self._check_images(images)
        features = self.patch_embed.proj(images)
        batch, dim, height, width = features.shape
        valid = valid_patch_grid(images, height, width)
        positions = interpolated_positions(self.pos_embed[:, 1:], (self.pos_grid, self.pos_grid),
                                           valid[:, :, 0].sum(dim=1), valid[:, 0, :].sum(dim=1), height, width)
        x = self.patch_embed.norm(features.flatten(2).transpose(1, 2)) + positions
        index, keep = sample_patches(valid.flatten(1), max_image_len)
        x = x.gather(1, index[..., None].expand(-1, -1, dim))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)
        masks = torch.cat([keep.new_ones(batch, 1), keep], dim=1)
        return self.pos_drop(torch.cat([cls, x], dim=1)), masks

    def prunes(self) -> bool:
        """Whether an ``encode`` with ``image_start`` prunes now (a pruner, active in this phase)."""
        return self.token_pruner is not None and self.token_pruner.active()

    def encode(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None, *,
               image_start: int | None = None, text_cls: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder blocks then the final norm; ``key_padding_mask`` (B, L) is 1 for real tokens.

        ``image_start``: position of the image CLS, whose patches run to the end of ``tokens``;
        given, the ELIP pruner (when there is one and it is active) shortens the patch tokens with
        ``text_cls`` (B, D) as the text vector (``TokenPruner.forward``). None: no pruning.
        """
        if image_start is not None and self.prunes():
            x, _ = self.token_pruner(self.blocks, tokens, key_padding_mask, image_start, text_cls)
            return self.norm(x)
        return self.norm(_run_blocks(self.blocks, tokens, key_padding_mask))

    def forward(self, images: torch.Tensor, text_cls: torch.Tensor | None = None) -> torch.Tensor:
        """Image-only features (B, 1 + N, D), or fewer tokens when ELIP prunes (with ``text_cls``)."""
        return self.encode(self.embed(images)[0], image_start=0, text_cls=text_cls)

    def decode(self, features: torch.Tensor, ids_restore: torch.Tensor | None) -> torch.Tensor:
        """MAE pixel prediction (B, N, p·p·3) from encoder image tokens (B, 1 + K, D).

        Mask tokens fill the removed positions, ``ids_restore`` puts patches back in raster order
        (``None``: none were removed), then decoder positions, blocks, norm and prediction; the CLS
        output is dropped.
        """
        if not self.has_decoder:
            raise RuntimeError(
                "this model has no MAE decoder: it is built only when loss_names.mae > 0"
            )
        x = self.decoder_embed(features)
        cls, patches = x[:, :1], x[:, 1:]
        if ids_restore is not None:
            missing = ids_restore.shape[1] - patches.shape[1]
            filler = self.mask_token.expand(x.shape[0], missing, -1).to(x.dtype)
            patches = torch.cat([patches, filler], dim=1)
            index = ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1])
            patches = patches.gather(1, index)
        x = torch.cat([cls, patches], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(_run_blocks(self.decoder_blocks, x, None))
        return self.decoder_pred(x)[:, 1:]

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, N, p·p·3) in (h, w, p, q, c) order, the MAE target layout."""
        return patchify(images, self.patch_size)


def with_token_pruner(tower: VisionTransformer, cfg: Any) -> VisionTransformer:
    """``tower`` with the ELIP pruner that ``cfg``'s ``img_prune*`` keys ask for (none when off)."""
    tower.token_pruner = token_pruner_from_config(cfg, tower.blocks, tower.num_patches)
    return tower


def build_vision_tower(cfg: Any) -> VisionTransformer:
    """The tower described by ``cfg`` (vit, hidden_size, num_layers, ..., loss_names.mae, img_prune)."""
    flavour = vit_flavour(cfg.vit, cfg.patch_size)
    with_decoder = cfg.loss_names.mae > 0
    tower = VisionTransformer(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        dim=cfg.hidden_size,
        depth=cfg.num_layers,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        learned_pos=flavour == "vilt",
        drop_rate=cfg.drop_rate if flavour == "vilt" else 0.0,
        decoder_dim=cfg.mae_decoder_dim if with_decoder else 0,
        decoder_depth=cfg.mae_decoder_depth,
        decoder_heads=cfg.mae_decoder_heads,
        pos_grid=cfg.vilt_pos_grid if flavour == "vilt" else 0,
        vilt_inputs=flavour == "vilt",
    )
    return with_token_pruner(tower, cfg)

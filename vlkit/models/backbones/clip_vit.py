"""CLIP's ViT image tower as METER uses it (meter_elip.md §2.2, §2.8): OpenAI CLIP's visual trunk
built from open_clip's blocks, with the last block dropped, ``ln_post`` on every token and no
projection, so it returns (B, 1 + G², width) tokens.

Key names inside the tower are OpenAI's and open_clip's (``conv1``, ``class_embedding``,
``positional_embedding``, ``ln_pre``, ``transformer.resblocks.N.*``, ``ln_post``), so CLIP files
load without renaming. ``vit`` names the weights: ``ViT-B/16`` or ``ViT-B/32`` are looked up where
OpenAI's loader caches them (``clip_cache_dir``, ``~/.cache/clip/ViT-B-16.pt``); any other value is
the path of an OpenAI archive, an OpenAI state dict or an open_clip checkpoint.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from open_clip.transformer import LayerNorm, QuickGELU, Transformer
from torch import nn

from vlkit.models.checkpoints.clip import read_clip_state_dict, visual_kind, visual_state
from vlkit.models.pos_embed import grid_side, resample_pos_embed
from vlkit.models.token_reduction import token_pruner_from_config

CLIP_NAMES = ("ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px")
"""OpenAI CLIP ViT names that ``vit`` may give (their files are ``NAME.replace('/', '-') + '.pt'``)."""
CLIP_HEAD_WIDTH = 64
"""CLIP's attention head width: a tower of width W has W // 64 heads."""
CLIP_BASE_DEPTH = 12
"""Blocks of CLIP ViT-B, of which METER keeps all but the last."""
BLOCK_KEY = re.compile(r"^transformer\.resblocks\.(\d+)\.")


@dataclass(frozen=True)
class ClipArchitecture:
    """What a CLIP visual state dict was built with (OpenAI's ``build_model`` reads the same keys)."""

    width: int
    depth: int
    patch_size: int

    @property
    def heads(self) -> int:
        return max(1, self.width // CLIP_HEAD_WIDTH)


def clip_architecture(visual: Mapping[str, torch.Tensor]) -> ClipArchitecture:
    """Width, depth and patch size of an un-prefixed CLIP visual state dict."""
    conv = visual["conv1.weight"]
    blocks = {int(match.group(1)) for key in visual if (match := BLOCK_KEY.match(key))}
    return ClipArchitecture(width=conv.shape[0], depth=len(blocks), patch_size=conv.shape[-1])


class ClipVisionTower(nn.Module):
    """Patchify (``conv1``), CLS and position embeddings, ``ln_pre``, the blocks
    (``transformer.resblocks``, batch-first open_clip ``ResidualAttentionBlock``s with QuickGELU)
    and ``ln_post`` on all tokens. The position table is allocated for ``image_size``."""

    def __init__(self, width: int, depth: int, heads: int, patch_size: int, image_size: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of the CLIP patch size {patch_size}")
        self.image_size, self.patch_size = image_size, patch_size
        grid = image_size // patch_size
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, depth, heads, mlp_ratio=4.0, act_layer=QuickGELU, batch_first=True)
        self.ln_post = LayerNorm(width)

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (``transformer.resblocks``), run in order by ``run_blocks``."""
        return self.transformer.resblocks

    @property
    def width(self) -> int:
        return self.class_embedding.shape[0]

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, 1 + G², width): patches, CLS first, positions added, ``ln_pre``."""
        if image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"the CLIP tower was built for {self.image_size}x{self.image_size} images and got "
                f"{tuple(image.shape[-2:])}; set image_size to the size the transforms produce"
            )
        x = self.conv1(image.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def run_blocks(self, x: torch.Tensor, text_cls: torch.Tensor | None = None) -> torch.Tensor:
        """Every block on the (B, N, width) tokens. ``text_cls`` (B, text width), the text
        encoder's first-token state, is what token pruning (ELIP) conditions on: with a
        ``token_pruner`` active in this phase the patch tokens shrink before its stage blocks."""
        pruner = getattr(self, "token_pruner", None)
        if pruner is not None and pruner.active():
            return pruner(self.blocks, x, text_cls=text_cls)[0]
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, image: torch.Tensor, text_cls: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, S, S) images → (B, N, width) tokens after ``ln_post``."""
        return self.ln_post(self.run_blocks(self.embed(image), text_cls))


def clip_weights_path(vit: str, cache_dir: str) -> str:
    """The CLIP file ``vit`` names: an existing path, or ``cache_dir/ViT-B-16.pt`` for ``ViT-B/16``."""
    if os.path.isfile(os.path.expanduser(vit)):
        return os.path.expanduser(vit)
    if vit not in CLIP_NAMES:
        raise ValueError(
            f"config key vit={vit!r} is neither a CLIP model name ({', '.join(CLIP_NAMES)}) nor an "
            f"existing file; give one of those names or the path of a CLIP checkpoint"
        )
    path = os.path.join(os.path.expanduser(cache_dir), vit.replace("/", "-") + ".pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"vit={vit!r}: no CLIP weights at {path}, and nothing can be downloaded here. Copy "
            f"OpenAI's {os.path.basename(path)} (or an open_clip checkpoint of {vit}) there, set "
            f"clip_cache_dir=<its folder> or vit=<its path>, or build from random weights with "
            f"backbone_init=random"
        )
    return path


def meter_tower_state(visual: Mapping[str, torch.Tensor], tower: ClipVisionTower) -> dict[str, torch.Tensor]:
    """A CLIP visual state dict as ``tower`` holds it: ``proj`` and the blocks past the tower's
    depth (METER: the last one) left out, the position table resampled to the tower's grid."""
    state = tower.state_dict()
    kept = {key: value for key, value in visual.items() if key in state}
    table = kept["positional_embedding"][None]
    kept["positional_embedding"] = resample_pos_embed(
        table, grid_side(state["positional_embedding"][None]), key="positional_embedding"
    )[0]
    return kept


def load_clip_tower(path: str, image_size: int, patch_size: int, width: int, config_key: str = "vit",
                    trust_checkpoint: bool = False) -> ClipVisionTower:
    """A tower from a CLIP file (OpenAI archive or state dict, open_clip checkpoint) with CLIP's
    last block dropped; ``patch_size`` and ``width`` are checked against the file."""
    visual = visual_state(read_clip_state_dict(path, config_key, trust_checkpoint))
    if visual_kind({f"visual.{key}": value for key, value in visual.items()}) != "vit":
        raise ValueError(f"{config_key}={path!r} holds a CLIP ResNet; METER's tower is a CLIP ViT (ViT-B/16, ViT-B/32)")
    arch = clip_architecture(visual)
    if arch.patch_size != patch_size:
        raise ValueError(
            f"{config_key}={path!r} has {arch.patch_size}-px patches but patch_size={patch_size}: "
            f"use the matching preset (clip16 or clip32) or patch_size={arch.patch_size}"
        )
    if arch.width != width:
        raise ValueError(f"{config_key}={path!r} is {arch.width} wide: set input_image_embed_size={arch.width}")
    tower = ClipVisionTower(arch.width, arch.depth - 1, arch.heads, arch.patch_size, image_size)
    tower.load_state_dict(meter_tower_state(visual, tower), strict=True)
    return tower


def build_clip_vit(cfg: Any) -> ClipVisionTower:
    """METER's vision tower (``clip_vit_tower``) with ELIP's ``token_pruner`` when ``img_prune`` is set."""
    tower = clip_vit_tower(cfg)
    grid = tower.image_size // tower.patch_size
    tower.token_pruner = token_pruner_from_config(cfg, tower.blocks, grid * grid)
    return tower


def clip_vit_tower(cfg: Any) -> ClipVisionTower:
    """METER's vision tower: loaded from the CLIP file ``vit`` names, or with
    ``backbone_init=random`` built from random weights (width ``input_image_embed_size``, CLIP
    depth ``vision_layers`` or 12, one block dropped)."""
    if cfg.backbone_init == "random":
        width = cfg.input_image_embed_size
        depth = cfg.vision_layers or CLIP_BASE_DEPTH
        if depth < 2:
            raise ValueError(f"vision_layers={depth}: a CLIP tower needs at least 2 blocks (METER drops the last)")
        heads = ClipArchitecture(width, depth, cfg.patch_size).heads
        return ClipVisionTower(width, depth - 1, heads, cfg.patch_size, cfg.image_size)
    if cfg.backbone_init != "pretrained":
        raise ValueError(f"backbone_init={cfg.backbone_init!r}: choose 'pretrained' or 'random'")
    path = clip_weights_path(cfg.vit, cfg.clip_cache_dir)
    return load_clip_tower(path, cfg.image_size, cfg.patch_size, cfg.input_image_embed_size,
                           trust_checkpoint=cfg.trust_checkpoint)

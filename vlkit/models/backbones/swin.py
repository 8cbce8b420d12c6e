"""Swin image tower as METER uses it (meter_elip.md §2.2): timm's ``SwinTransformer`` with the
window of every stage set to ``image_size / 32`` (the last stage is one global window), no head,
returning the final-stage tokens after ``norm``: (B, (image_size / 32)², 8 · embed_dim).

Key names are timm's (``patch_embed.*``, ``layers.{s}.blocks.{b}.*``, ``layers.{s}.downsample.*``,
``norm.*``). Files in the original Swin layout (METER's checkpoints, Microsoft's ImageNet-22k
``.pth``) go through timm's ``checkpoint_filter_fn``: downsampling moves from the end of stage s to
the start of stage s + 1, the index / mask buffers are dropped and the relative-position tables are
resized to the model's window (METER's ``swin_adapt_position_encoding``). Swin has no CLS token, so
it cannot prune tokens (ELIP) and METER average-pools its tokens for the image pooler.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

from vlkit.utils.safe_load import safe_torch_load

SWIN_STRIDE = 32
"""Pixels per final-stage token side."""
SWIN_HEAD_WIDTH = 32
"""Swin's attention head width (Base: 128 wide, 4 heads)."""
BLOCK_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")


@dataclass(frozen=True)
class SwinArchitecture:
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]


SWIN_ARCHITECTURES = {
    "swin_base_patch4_window7_224_in22k": SwinArchitecture(128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "swin_base_patch4_window12_384_in22k": SwinArchitecture(128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "swin_large_patch4_window12_384_in22k": SwinArchitecture(192, (2, 2, 18, 2), (6, 12, 24, 48)),
}
"""METER's Swin ``vit`` names (swin32_* presets); the window is set from ``image_size``."""


def is_swin(vit: str) -> bool:
    """Whether ``vit`` names a Swin tower (METER's ``swin`` in the name test)."""
    return "swin" in vit


class SwinVisionTower(SwinTransformer):
    """timm's Swin without a head; ``forward`` gives (B, N, C) final-stage tokens after ``norm``."""

    def __init__(self, arch: SwinArchitecture, image_size: int):
        if image_size % SWIN_STRIDE:
            raise ValueError(f"image_size={image_size}: a Swin tower needs a multiple of {SWIN_STRIDE}")
        super().__init__(img_size=image_size, patch_size=4, window_size=image_size // SWIN_STRIDE,
                         embed_dim=arch.embed_dim, depths=arch.depths, num_heads=arch.num_heads,
                         num_classes=0, drop_path_rate=0.0)
        self.image_size = image_size

    @property
    def blocks(self) -> list:
        """Every block of every stage, in order (their count sets the layer-decay depth)."""
        return [block for stage in self.layers for block in stage.blocks]

    def block_index(self, stage: int, block: int) -> int:
        """Position of ``layers.{stage}.blocks.{block}`` in ``blocks``."""
        return sum(len(self.layers[s].blocks) for s in range(stage)) + block

    def forward(self, image: torch.Tensor, text_cls: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, S, S) → (B, (S/32)², C). ``text_cls`` exists for the tower interface only: Swin
        does not prune (the model refuses ``img_prune`` with a Swin tower at build)."""
        if image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"the Swin tower was built for {self.image_size}x{self.image_size} images and got "
                             f"{tuple(image.shape[-2:])}; set image_size to the size the transforms produce")
        return self.forward_features(image).flatten(1, 2)

    def adapt_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A Swin state dict (original or timm layout, any window) as this tower holds it."""
        return checkpoint_filter_fn(dict(state), self)


def swin_architecture(cfg: Any) -> SwinArchitecture:
    """A random tower's architecture: ``vit``'s stages at ``input_image_embed_size / 8`` wide
    (one head per 32 channels), so ``meter_tiny``-sized configs run on a CPU."""
    if cfg.vit not in SWIN_ARCHITECTURES:
        raise ValueError(f"vit={cfg.vit!r}: the Swin towers are {list(SWIN_ARCHITECTURES)} (presets swin32_*)")
    dim = cfg.input_image_embed_size // 8
    return SwinArchitecture(dim, SWIN_ARCHITECTURES[cfg.vit].depths,
                            tuple(max(1, dim * 2**s // SWIN_HEAD_WIDTH) for s in range(4)))


def swin_file_architecture(state: Mapping[str, torch.Tensor]) -> SwinArchitecture:
    """Width, blocks per stage and heads of a Swin state dict (original or timm layout)."""
    stages: dict[int, set[int]] = {}
    for key in state:
        if match := BLOCK_KEY.match(key):
            stages.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    heads = tuple(state[f"layers.{s}.blocks.0.attn.relative_position_bias_table"].shape[1] for s in sorted(stages))
    return SwinArchitecture(state["patch_embed.proj.weight"].shape[0], tuple(len(stages[s]) for s in sorted(stages)),
                            heads)


def build_swin_tower(cfg: Any) -> SwinVisionTower:
    """METER's Swin tower: from random weights (``backbone_init=random``), or built as the
    ``swin_weights`` file (a Swin ``.pth``/timm checkpoint) is and filled from it."""
    if cfg.backbone_init == "random":
        return SwinVisionTower(swin_architecture(cfg), cfg.image_size)
    path = os.path.expanduser(cfg.swin_weights or "")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"vit={cfg.vit!r} needs its ImageNet-22k weights and nothing can be downloaded here: set "
            f"swin_weights=<path of {cfg.vit}.pth or a timm checkpoint> (now {cfg.swin_weights!r}), or "
            "build from random weights with backbone_init=random"
        )
    state = safe_torch_load(path, "swin_weights", cfg.trust_checkpoint)
    state = state.get("model", state.get("state_dict", state))
    arch = swin_file_architecture(state)
    if arch.embed_dim * 8 != cfg.input_image_embed_size:
        raise ValueError(f"swin_weights={path!r} gives {arch.embed_dim * 8}-wide tokens: set "
                         f"input_image_embed_size={arch.embed_dim * 8} (or use the matching swin32_* preset)")
    tower = SwinVisionTower(arch, cfg.image_size)
    result = tower.load_state_dict(tower.adapt_state(state), strict=False)
    unexpected = [key for key in result.unexpected_keys if not key.startswith("head.")]
    if result.missing_keys or unexpected:
        raise ValueError(f"swin_weights={path!r} does not fit a Swin tower: missing {result.missing_keys[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return tower

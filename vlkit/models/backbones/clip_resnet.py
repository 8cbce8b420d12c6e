"""CLIP's ModifiedResNet as a grid-feature backbone (CLIP-ViL, fact sheet clipvil.md §2.2-2.5).

The network is open_clip's ``ModifiedResNet`` (the class OpenAI's RN weights fit, same key names)
without its attention pool: ``forward`` returns the ``layer4`` map (B, 32·width, H/32, W/32).
Around it: which cells of that grid cover real pixels, learned row and column embeddings added
in feature space, and random sub-sampling of cells.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from torch import nn

from vlkit.models.checkpoints import LoadReport
from vlkit.models.checkpoints.clip import read_clip_state_dict, visual_kind, visual_state

log = logging.getLogger(__name__)

STRIDE = 32
"""Pixels per grid cell side (the ResNet's total stride)."""
CLIP_RESNETS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64")


def resnet_shape(name: str) -> tuple[list[int], int]:
    """``(blocks per stage, stem width)`` of an open_clip ResNet (``RN50``: [3, 4, 6, 3], 64)."""
    if name not in CLIP_RESNETS:
        raise ValueError(f"clip_model_name={name!r} is not a CLIP ResNet; choose one of {list(CLIP_RESNETS)}")
    vision = open_clip.get_model_config(name)["vision_cfg"]
    return list(vision["layers"]), int(vision["width"])


def named_resnet(layers: Sequence[int], width: int) -> str | None:
    """The CLIP ResNet with these blocks and width, if one is."""
    for name in CLIP_RESNETS:
        if resnet_shape(name) == (list(layers), width):
            return name
    return None


class ClipResNetGrid(ModifiedResNet):
    """ModifiedResNet with the attention pool removed; ``forward`` gives the grid features."""

    def __init__(self, layers: Sequence[int], width: int):
        # output_dim / heads only size the attention pool, which is dropped right away
        super().__init__(list(layers), output_dim=width * 32, heads=max(1, width // 2), image_size=224, width=width)
        del self.attnpool
        self.layers = list(layers)
        self.width = width

    @classmethod
    def from_config(cls, cfg: Any) -> "ClipResNetGrid":
        """``clip_model_name``'s shape, or ``clip_layers`` / ``clip_width`` where set."""
        layers, width = resnet_shape(cfg.clip_model_name)
        return cls(list(cfg.clip_layers) or layers, cfg.clip_width or width)

    @property
    def out_channels(self) -> int:
        return self.width * 32

    def init_parameters(self) -> None:  # the parent's touches the attention pool, present during __init__ only
        if getattr(self, "attnpool", None) is not None:
            super().init_parameters()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, C, H/32, W/32); H and W must be multiples of 32."""
        if images.shape[-2] % STRIDE or images.shape[-1] % STRIDE:
            raise ValueError(
                f"image of {images.shape[-2]}x{images.shape[-1]} px: both sides must be multiples of {STRIDE} "
                "(image_size_min / image_size_max set the canvas)"
            )
        x = self.stem(images)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_clip(self, path: str, trust_checkpoint: bool = False) -> LoadReport:
        """Fill the ResNet from a local CLIP file (``read_clip_state_dict``); the attention pool and
        the text tower are reported as ignored. A file of another ResNet shape is refused."""
        state = read_clip_state_dict(path, "clip_path", trust_checkpoint)
        if visual_kind(state) != "resnet":
            raise ValueError(f"clip_path={path!r} holds a CLIP ViT, not a ResNet; give an RN50/RN50x4/... file")
        visual = visual_state(state)
        found_width = visual["conv1.weight"].shape[0] * 2
        found_layers = [len({k.split(".")[1] for k in visual if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
        if (found_layers, found_width) != (self.layers, self.width):
            found = named_resnet(found_layers, found_width) or f"blocks {found_layers}, width {found_width}"
            mine = named_resnet(self.layers, self.width) or f"blocks {self.layers}, width {self.width}"
            raise ValueError(f"clip_path={path!r} is a {found} ResNet but the model is built as {mine}; "
                             f"set clip_model_name to match the file")
        report = LoadReport(format="clip", path=path)
        own = {k: v for k, v in visual.items() if not k.startswith("attnpool.")}
        result = self.load_state_dict(own, strict=False)
        report.loaded, report.loaded_keys = len(own), sorted(own)
        report.missing = list(result.missing_keys)
        report.unexpected = list(result.unexpected_keys)
        report.ignored = sorted(k for k in state if not k.startswith("visual.") or k.startswith("visual.attnpool."))
        log.info("clip_path: %s", report)
        return report


def cell_mask(pixel_mask: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, rows, cols) bool: which grid cells cover at least one real pixel of a (B, H, W) mask."""
    pooled = F.adaptive_max_pool2d(pixel_mask[:, None].float(), (rows, cols))
    return pooled[:, 0] > 0


class GridPositionEmbedding(nn.Module):
    """Learned ``row`` and ``col`` tables (``pos_num`` x C); cell (r, c) gets row[r] + col[c],
    added to the features out of place (the reference's in-place add breaks backward)."""

    def __init__(self, pos_num: int, channels: int):
        super().__init__()
        self.row = nn.Embedding(pos_num, channels)
        self.col = nn.Embedding(pos_num, channels)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        rows, cols = grid.shape[-2:]
        if max(rows, cols) > self.row.num_embeddings:
            raise ValueError(
                f"a {rows}x{cols} grid needs more than pos_num={self.row.num_embeddings} row/column embeddings; "
                "raise pos_num or lower image_size_max"
            )
        pos = self.row.weight[:rows].t()[:, :, None] + self.col.weight[:cols].t()[:, None, :]
        return grid + pos.to(grid.dtype)


def grid_tokens(grid: torch.Tensor) -> torch.Tensor:
    """(B, C, R, Q) → (B, R·Q, C), cells in row-major order."""
    return grid.flatten(2).transpose(1, 2)


def sub_sample_cells(
    tokens: torch.Tensor, valid: torch.Tensor, count: int, prefer_valid: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` distinct cells per example, drawn uniformly without replacement, in random order.

    ``tokens`` (B, N, C), ``valid`` (B, N) bool. With ``prefer_valid`` cells over padding are drawn
    only when an image has fewer than ``count`` real cells. Returns the kept tokens and their
    ``valid`` flags.
    """
    batch, cells = valid.shape
    if not 0 < count <= cells:
        raise ValueError(f"sub_feat_num={count} must be in [1, {cells}] (the grid's cells); lower sub_feat_num")
    scores = torch.rand(batch, cells, generator=generator, device="cpu").to(tokens.device)
    if prefer_valid:
        scores = scores + (~valid).float() * 2
    keep = scores.argsort(dim=1)[:, :count]
    picked = tokens.gather(1, keep[:, :, None].expand(-1, -1, tokens.shape[-1]))
    return picked, valid.gather(1, keep)

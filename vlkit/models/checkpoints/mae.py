"""MAE layout: ``{"model": ...}`` with unprefixed ViT keys (and maybe the decoder).

The keys are the vision tower's own (``cls_token``, ``blocks.{i}.attn.qkv.weight``,
``decoder_blocks.{j}...``, ``mask_token``), so they load under ``transformer.`` unchanged; a
fine-tuned MAE's ``head.*`` / ``fc_norm.*`` come out as unexpected keys.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

VIT_MARKER = "patch_embed.proj.weight"
SCOPE = "transformer."


def matches(checkpoint: Mapping[str, Any]) -> bool:
    """True for ``{"model": {..., "patch_embed.proj.weight": ...}}``."""
    weights = checkpoint.get("model")
    return isinstance(weights, Mapping) and VIT_MARKER in weights


def convert(checkpoint: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict under ``transformer.``, scope ``transformer.``: the vision tower)."""
    return {SCOPE + key: value for key, value in checkpoint["model"].items()}, SCOPE

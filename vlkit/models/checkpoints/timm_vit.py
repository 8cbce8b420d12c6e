"""Plain timm ViT state dict (flat, or under ``state_dict`` as timm's train script saves it).

timm's ViT names (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.*``,
``norm``) are the vision tower's, so they load under ``transformer.``; the classifier
(``head.*``, ``fc_norm.*``) has no place in the model and is reported as unexpected.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

VIT_MARKER = "patch_embed.proj.weight"
SCOPE = "transformer."


def _weights(checkpoint: Mapping[str, Any]) -> Any:
    return checkpoint.get("state_dict", checkpoint)


def matches(checkpoint: Mapping[str, Any]) -> bool:
    """True when the flat dict (or its ``state_dict``) holds ``patch_embed.proj.weight``."""
    weights = _weights(checkpoint)
    return isinstance(weights, Mapping) and VIT_MARKER in weights


def convert(checkpoint: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict under ``transformer.``, scope ``transformer.``: the vision tower)."""
    return {SCOPE + key: value for key, value in _weights(checkpoint).items()}, SCOPE

"""METER checkpoints (meter_elip.md §2.6-2.7): Lightning ``{"state_dict": ...}`` files of
``METERTransformerSS``, and vlkit's own ``model=co_attention`` checkpoints, into the co_attention
family.

vlkit names its modules as METER does, so the conversion is nearly the identity: the CLIP
tower's ``vit_model.visual.*`` keys lose their ``visual.`` level, and the dead parts METER saves
are left out and listed by ``ignored_keys`` (the CLIP wrapper's unused text
``vit_model.positional_embedding`` and ``vit_model.ln_final.*``, the never-used HF pooler
``text_transformer.pooler.*``, transformers 4.x buffers and a Swin tower's index and mask buffers).
Metric states are dropped; a Swin tower's keys are moved into timm's layout by the model's
``adapt_checkpoint``. The loader
then resamples ``vit_model.positional_embedding`` to the model's grid and gives NLVR2's
three-row token-type table its third row from row 1, as METER does.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from vlkit.models.checkpoints.lightning import METRIC_PREFIXES

MARKERS = ("vit_model.", "cross_modal_text_layers.")
VISUAL_PREFIX = "vit_model.visual."
DEAD_KEYS = frozenset({"text_transformer.embeddings.position_ids", "text_transformer.embeddings.token_type_ids"})
DEAD_PREFIXES = ("text_transformer.pooler.",)
DEAD_SUFFIXES = ("relative_position_index", "attn_mask")
"""A Swin tower's buffers, rebuilt by the model for its own window."""
CLIP_TEXT_KEYS = frozenset({"vit_model.positional_embedding", "vit_model.ln_final.weight", "vit_model.ln_final.bias"})
"""Dead in METER's layout only: there the tower's own table is ``vit_model.visual.positional_embedding``."""


def _weights(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    return checkpoint.get("state_dict", checkpoint)


def matches(checkpoint: Mapping[str, Any]) -> bool:
    """True when the weights carry METER's ``vit_model.`` or ``cross_modal_text_layers.`` keys."""
    weights = _weights(checkpoint)
    return isinstance(weights, Mapping) and any(
        isinstance(key, str) and key.startswith(MARKERS) for key in weights
    )


def _meter_layout(weights: Mapping[str, Any]) -> bool:
    return any(isinstance(key, str) and key.startswith(VISUAL_PREFIX) for key in weights)


def _dead(key: str, meter_layout: bool) -> bool:
    return (key in DEAD_KEYS or key.startswith(DEAD_PREFIXES) or key.endswith(DEAD_SUFFIXES)
            or (meter_layout and key in CLIP_TEXT_KEYS))


def ignored_keys(checkpoint: Mapping[str, Any]) -> list[str]:
    """Checkpoint keys of parts METER saves but never uses; the conversion leaves them out."""
    weights = _weights(checkpoint)
    return sorted(key for key in weights if _dead(key, _meter_layout(weights)))


def convert(checkpoint: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in model key names, scope ``""``: the whole model)."""
    weights = _weights(checkpoint)
    meter_layout = _meter_layout(weights)
    state = {}
    for key, value in weights.items():
        if _dead(key, meter_layout) or key.startswith(METRIC_PREFIXES):
            continue
        if key.startswith(VISUAL_PREFIX):
            key = "vit_model." + key[len(VISUAL_PREFIX):]
        state[key] = value
    return state, ""

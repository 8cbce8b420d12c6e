"""Lightning layout: VLC, ViLT and vlkit checkpoints, or an ALBEF-style ``{"model": ...}``.

Keys already carry the model's prefixes (``transformer.``, ``text_embeddings.``, ...), so the
conversion only drops what is not a weight: metric states (``train_*``, ``val_*``, ``dev_*``,
``test_*``) and the BERT buffers that transformers 4.x saved and 5.x no longer registers.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

MODEL_PREFIXES = ("transformer.", "text_embeddings.", "visual_encoder.", "text_encoder.")
METRIC_PREFIXES = ("train_", "val_", "dev_", "test_")
STALE_BUFFERS = frozenset({"text_embeddings.position_ids", "text_embeddings.token_type_ids"})


def _weights(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    if "state_dict" in checkpoint:
        return checkpoint["state_dict"]
    return checkpoint.get("model", checkpoint)


def matches(checkpoint: Mapping[str, Any]) -> bool:
    """True when the weights (``state_dict``, ``model`` or the dict itself) carry model prefixes."""
    weights = _weights(checkpoint)
    return isinstance(weights, Mapping) and any(
        isinstance(key, str) and key.startswith(MODEL_PREFIXES) for key in weights
    )


def convert(checkpoint: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in model key names, scope ``""``: the whole model)."""
    state = {
        key: value
        for key, value in _weights(checkpoint).items()
        if not key.startswith(METRIC_PREFIXES) and key not in STALE_BUFFERS
    }
    return state, ""

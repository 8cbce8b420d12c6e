"""ALBEF and GRIT-VLP checkpoints: ``{"model": state_dict, "optimizer", "lr_scheduler", "config",
"epoch"}`` (fact sheet grit_albef.md §2.9), into ``model=cross_attention``; and back.

Two layouts exist: pre-training (``text_encoder.bert.*`` plus the MLM head under
``text_encoder.cls.predictions.*``) and fine-tuned (``text_encoder.*`` without ``bert.``). Both
load. Mapped: ``vision_proj``/``text_proj`` → ``itc_head.image_proj``/``text_proj``, ``temp`` →
``itc_head.logit_scale`` (= log 1/temp), ``itm_head`` → ``itm_score.fc``. ALBEF's momentum copies
(``*_m.*``) and feature queues have no place in a model without momentum and come out as
unexpected keys; ``visual_encoder.pos_embed`` is resampled to the model's grid by the loader.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

MARKERS = ("visual_encoder.", "text_encoder.")
MLM_PREFIX = "text_encoder.cls.predictions."
RENAMED_PREFIXES = {
    "text_encoder.bert.": "text_encoder.",
    MLM_PREFIX: "mlm_score.",
    "vision_proj.": "itc_head.image_proj.",
    "text_proj.": "itc_head.text_proj.",
    "itm_head.": "itm_score.fc.",
}
DROPPED = frozenset({
    "text_encoder.bert.embeddings.position_ids", "text_encoder.embeddings.position_ids",
    MLM_PREFIX + "decoder.bias",  # the same tensor as cls.predictions.bias in BERT
})


def matches(checkpoint: Mapping[str, Any]) -> bool:
    """True for ``{"model": {...}}`` holding both ``visual_encoder.*`` and ``text_encoder.*`` keys."""
    weights = checkpoint.get("model")
    if "state_dict" in checkpoint or not isinstance(weights, Mapping):
        return False
    return all(any(str(key).startswith(marker) for key in weights) for marker in MARKERS)


def _rename(key: str) -> str:
    for old, new in RENAMED_PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def convert(checkpoint: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in ``CrossAttentionModel`` key names, scope ``""``: the whole model)."""
    state = {}
    for key, value in checkpoint["model"].items():
        if key in DROPPED:
            continue
        if key == "temp":
            state["itc_head.logit_scale"] = torch.log(1 / value.float())
        else:
            state[_rename(key)] = value
    return state, ""


def to_albef(state_dict: Mapping[str, torch.Tensor], layout: str = "pretrain") -> dict[str, torch.Tensor]:
    """A ``CrossAttentionModel`` state dict in ALBEF's key names: ``layout="pretrain"`` (GRIT's
    ``ALBEF_Base``: ``bert.`` infix, MLM head under ``text_encoder.cls.predictions``) or
    ``"finetune"`` (no ``bert.``; retrieval / VQA encoder). Wrap it as ``{"model": ...}`` to save."""
    if layout not in ("pretrain", "finetune"):
        raise ValueError(f"layout={layout!r}: choose 'pretrain' or 'finetune'")
    inverse = {new: old for old, new in RENAMED_PREFIXES.items()}
    if layout == "finetune":
        inverse["text_encoder."] = "text_encoder."
    out = {}
    for key, value in state_dict.items():
        if key == "itc_head.logit_scale":
            out["temp"] = torch.exp(-value.float())
            continue
        prefix = max((p for p in inverse if key.startswith(p)), key=len, default=None)
        name = key if prefix is None else inverse[prefix] + key[len(prefix):]
        out[name] = value
        if key == "mlm_score.bias":
            out[MLM_PREFIX + "decoder.bias"] = value
    return out


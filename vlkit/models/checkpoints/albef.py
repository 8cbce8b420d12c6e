"""ALBEF and GRIT-VLP checkpoints: ``{"model": state_dict, "optimizer", "lr_scheduler", "config",
"epoch"}`` (fact sheet grit_albef.md §2.9), into ``model=cross_attention``; and back.

Two layouts exist: pre-training (``text_encoder.bert.*`` plus the MLM head under
``text_encoder.cls.predictions.*``) and fine-tuned (``text_encoder.*`` without ``bert.``). Both
load. Mapped: ``vision_proj``/``text_proj`` → ``itc_head.image_proj``/``text_proj``, ``temp`` →
``itc_head.logit_scale`` (= log 1/temp), ``itm_head`` → ``itm_score.fc``, NLVR2's ``cls_head`` →
``nlvr2_classifier`` (``ta_head`` keeps its name), the VQA answer decoder's ``text_decoder.bert.*`` /
``text_decoder.cls.predictions.*`` → ``text_decoder.*`` / ``text_decoder.lm_head.*``. ALBEF's momentum copies
(``*_m.*``) go to ``momentum_model.*`` and its queues (``image_queue`` / ``text_queue`` [D, Q],
``idx_queue`` [1, Q], ``queue_ptr``) to ``itc_queue.*`` (rows are features there); a model built
without momentum reports them as unexpected. ``visual_encoder.pos_embed`` is resampled to the
model's grid by the loader.
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
    "cls_head.": "nlvr2_classifier.",  # NLVR2's head on a paired model (ALBEF's ta_head keeps its name)
    "text_decoder.bert.": "text_decoder.",  # VQA answer decoder (a BertLMHeadModel)
    "text_decoder.cls.predictions.": "text_decoder.lm_head.",
    "visual_encoder_m.": "momentum_model.visual_encoder.",
    "text_encoder_m.bert.": "momentum_model.text_encoder.",
    "text_encoder_m.cls.predictions.": "momentum_model.mlm_score.",
    "text_encoder_m.": "momentum_model.text_encoder.",  # fine-tuned layout, after the two above
    "vision_proj_m.": "momentum_model.itc_head.image_proj.",
    "text_proj_m.": "momentum_model.itc_head.text_proj.",
}
QUEUES = {"image_queue": "itc_queue.image", "text_queue": "itc_queue.text",
          "idx_queue": "itc_queue.index", "queue_ptr": "itc_queue.ptr"}
"""ALBEF's queue buffers and their names in ``vlkit.models.momentum.FeatureQueue``."""
DROPPED = frozenset({
    f"{encoder}{infix}embeddings.position_ids" for encoder in ("text_encoder.", "text_encoder_m.")
    for infix in ("", "bert.")
} | {
    MLM_PREFIX + "decoder.bias", "text_encoder_m.cls.predictions.decoder.bias",  # = cls.predictions.bias
    "text_decoder.bert.embeddings.position_ids", "text_decoder.cls.predictions.decoder.bias",
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
        elif key in QUEUES:
            state[QUEUES[key]] = _from_albef_queue(key, value)
        else:
            state[_rename(key)] = value
    return state, ""


def _from_albef_queue(key: str, value: torch.Tensor) -> torch.Tensor:
    if key == "queue_ptr":
        return value.reshape(())
    if key == "idx_queue":
        return value.reshape(-1)
    return value.t().contiguous()


def _to_albef_queue(key: str, value: torch.Tensor) -> torch.Tensor:
    if key == "queue_ptr":
        return value.reshape(1)
    if key == "idx_queue":
        return value.reshape(1, -1)
    return value.t().contiguous()


def to_albef(state_dict: Mapping[str, torch.Tensor], layout: str = "pretrain") -> dict[str, torch.Tensor]:
    """A ``CrossAttentionModel`` state dict in ALBEF's key names: ``layout="pretrain"`` (GRIT's
    ``ALBEF_Base``: ``bert.`` infix, MLM head under ``text_encoder.cls.predictions``) or
    ``"finetune"`` (no ``bert.``; retrieval / VQA encoder, and the NLVR2 models: 18 paired layers
    with ``cls_head``, or with ``ta_head`` after text assignment) or ``"vqa"`` (fine-tuned, and the
    answer decoder must be there). The answer decoder is written in ALBEF's ``text_decoder.bert.*`` /
    ``text_decoder.cls.predictions.*`` layout. Wrap it as ``{"model": ...}`` to save."""
    if layout not in ("pretrain", "finetune", "vqa"):
        raise ValueError(f"layout={layout!r}: choose 'pretrain', 'finetune' or 'vqa'")
    if layout == "vqa" and not any(key.startswith("text_decoder.") for key in state_dict):
        raise ValueError("layout='vqa': the state dict has no answer decoder (text_decoder.*); build the "
                         "model with loss_names.vqa_decoder > 0")
    inverse = {new: old for old, new in RENAMED_PREFIXES.items()}
    inverse["momentum_model.text_encoder."] = "text_encoder_m.bert."
    if layout in ("finetune", "vqa"):
        inverse["text_encoder."] = "text_encoder."
        inverse["momentum_model.text_encoder."] = "text_encoder_m."
    queues = {new: old for old, new in QUEUES.items()}
    out = {}
    for key, value in state_dict.items():
        if key == "itc_head.logit_scale":
            out["temp"] = torch.exp(-value.float())
            continue
        if key in queues:
            out[queues[key]] = _to_albef_queue(queues[key], value)
            continue
        prefix = max((p for p in inverse if key.startswith(p)), key=len, default=None)
        name = key if prefix is None else inverse[prefix] + key[len(prefix):]
        out[name] = value
        if key in ("mlm_score.bias", "momentum_model.mlm_score.bias", "text_decoder.lm_head.bias"):
            out[name.replace(".bias", ".decoder.bias")] = value
    return out


"""CLIP-ViL checkpoints (fact sheet clipvil.md §2.8, key lists in clipvil_keys/) into ``model=clipvil``; and back.

Two layouts, both with DDP's ``module.`` prefix:

* pre-training ``EpochNN_LXRT.pth``: ``module.bert.{embeddings, encoder.layer.N, encoder.visn_fc,
  encoder.visual_pos, encoder.visual_model.<OpenAI CLIP key>, pooler}``, ``module.cls.{predictions,
  seq_relationship}`` and in stage two ``module.answer_head.logit_fc.{0,2,3}``;
* VQA ``BEST.pth`` / ``LAST.pth``: ``module.lxrt_encoder.model.bert.*`` and ``module.logit_fc.{0,2,3}``.

A Hugging Face BERT (``bert.*``, ``cls.*``, old ``gamma``/``beta`` names) reads as the same layout.
The parts the model does not have (the box projection ``visn_fc.box_*``, CLIP's attention pool and
text tower) keep their names and are reported as unexpected; the writers add them back
(``extras``, from ``clipvil_parts.reference_only_parts``) so that exported files hold every key. LXMERT's two-stream layers
(``encoder.r_layers``, ``encoder.x_layers``) map too, though no released checkpoint has them.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch

from vlkit.utils.atomic import atomic_torch_save

MARKERS = ("module.bert.", "module.lxrt_encoder.", "bert.embeddings.", "lxrt_encoder.")
RENAMES = (
    ("bert.embeddings.", "text_embeddings."),
    ("bert.encoder.layer.", "encoder.layer."),
    ("bert.encoder.r_layers.", "encoder.relation_layers."),
    ("bert.encoder.x_layers.", "encoder.cross_layers."),
    ("bert.encoder.visn_fc.visn_fc.", "visual_proj.fc."),
    ("bert.encoder.visn_fc.visn_layer_norm.", "visual_proj.norm."),
    ("bert.encoder.visual_pos.x_position_embedding.", "grid_pos.row."),
    ("bert.encoder.visual_pos.y_position_embedding.", "grid_pos.col."),
    ("bert.encoder.visual_model.visual.", "backbone."),
    ("bert.pooler.dense.", "pooler."),
    ("cls.predictions.", "mlm_score."),
    ("cls.seq_relationship.", "itm_score.fc."),
    ("answer_head.logit_fc.", "qa_head."),
    ("logit_fc.", "vqa_classifier."),
)
"""(reference prefix, vlkit prefix), after ``module.`` and ``lxrt_encoder.model.`` are removed."""
CROSS_LAYER_PARTS = (
    (".visual_attention.att.", ".cross_attention.self."),
    (".visual_attention.output.", ".cross_attention.output."),
    (".lang_self_att.", ".text_self_attention."),
    (".visn_self_att.", ".image_self_attention."),
    (".lang_inter.", ".text_intermediate."),
    (".lang_output.", ".text_output."),
    (".visn_inter.", ".image_intermediate."),
    (".visn_output.", ".image_output."),
)
UNUSED_BACKBONE = "backbone.attnpool."
VQA_HEAD = "vqa_classifier."


def _weights(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    return checkpoint


def matches(checkpoint: Mapping[str, Any]) -> bool:
    """True for the reference's pre-training / VQA layouts and Hugging Face BERT weights."""
    weights = _weights(checkpoint)
    return isinstance(weights, Mapping) and any(isinstance(k, str) and k.startswith(MARKERS) for k in weights)


def _vlkit_key(key: str) -> str:
    name = key.removeprefix("module.").removeprefix("lxrt_encoder.model.")
    if name.endswith("LayerNorm.gamma") or name.endswith("LayerNorm.beta"):  # TF-era BERT names
        name = name.removesuffix("gamma") + "weight" if name.endswith("gamma") else name.removesuffix("beta") + "bias"
    for old, new in RENAMES:
        if name.startswith(old):
            name = new + name[len(old):]
            break
    else:
        return key  # not a part of the model: reported as unexpected under its own name
    if name.startswith("encoder.cross_layers."):
        for old, new in CROSS_LAYER_PARTS:
            name = name.replace(old, new)
    if name.startswith(UNUSED_BACKBONE):
        return key
    return name


def convert(checkpoint: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in ``model=clipvil`` names, scope ``""``: the whole model)."""
    return {_vlkit_key(key): value for key, value in _weights(checkpoint).items()
            if torch.is_tensor(value) and not key.endswith("position_ids")}, ""


def _reference_key(name: str, layout: str) -> str | None:
    if name.startswith("encoder.cross_layers."):
        for old, new in CROSS_LAYER_PARTS:
            name = name.replace(new, old)
    for old, new in RENAMES:
        if name.startswith(new):
            reference = old + name[len(new):]
            break
    else:
        raise KeyError(f"model key {name!r} has no place in the CLIP-ViL checkpoint layout")
    if layout == "vqa":
        if reference.startswith(("cls.", "answer_head.")):
            return None
        return f"module.{reference}" if reference.startswith("logit_fc.") else f"module.lxrt_encoder.model.{reference}"
    return None if reference.startswith("logit_fc.") else f"module.{reference}"


def to_clipvil(state: Mapping[str, torch.Tensor], layout: str = "pretrain",
               extras: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A ``model=clipvil`` state dict in the reference's ``EpochNN_LXRT.pth`` (``pretrain``) or
    ``BEST.pth`` (``vqa``) layout; heads the layout has no place for are left out. ``extras``
    (reference names without prefix, ``bert.encoder....``) are added at the layout's prefix."""
    if layout not in ("pretrain", "vqa"):
        raise ValueError(f"layout={layout!r}: choose 'pretrain' (EpochNN_LXRT.pth) or 'vqa' (BEST.pth)")
    out = {}
    for name, value in state.items():
        key = _reference_key(name, layout)
        if key is not None:
            out[key] = value.detach().clone()
    prefix = "module.lxrt_encoder.model." if layout == "vqa" else "module."
    out.update({prefix + name: value.detach().clone() for name, value in (extras or {}).items()})
    return out


SIDE_FILES = (("AdamOptim", "optimizer_states", 0), ("SGDOptim", "optimizer_states", 1),
              ("Scheduler", "lr_schedulers", 0))
"""``_LXRT_<suffix>.pth`` files beside a pre-training checkpoint: (suffix, vlkit checkpoint key, position)."""


def pretrain_file_prefix(checkpoint: Mapping[str, Any], end_of_epoch: bool) -> str:
    """``EpochNN`` for a checkpoint written as epoch NN (1-based) ended, ``EpochNNStepS`` for one
    written within epoch NN at optimizer step S (the reference's ``--save_step`` files)."""
    epoch = checkpoint["epoch"] + (1 if checkpoint["vlkit"]["batch_in_epoch"] else 0)  # the trainer's is 0-based
    return f"Epoch{epoch:02d}" if end_of_epoch else f"Epoch{epoch:02d}Step{checkpoint['global_step']}"


def write_pretrain_files(checkpoint: Mapping[str, Any], folder: str, end_of_epoch: bool,
                         extras: Mapping[str, torch.Tensor] | None = None) -> list[str]:
    """A vlkit pre-training checkpoint (plus ``extras``, see ``to_clipvil``) as the reference's
    ``<prefix>_LXRT.pth`` and its optimizer / schedule side files (``SIDE_FILES``) in ``folder``,
    each written atomically; the paths."""
    prefix = os.path.join(folder, pretrain_file_prefix(checkpoint, end_of_epoch) + "_LXRT")
    atomic_torch_save(to_clipvil(checkpoint["state_dict"], "pretrain", extras), prefix + ".pth")
    written = [prefix + ".pth"]
    for suffix, key, position in SIDE_FILES:
        if position < len(checkpoint[key]):
            atomic_torch_save(checkpoint[key][position], f"{prefix}_{suffix}.pth")
            written.append(f"{prefix}_{suffix}.pth")
    return written


def write_vqa_file(checkpoint: Mapping[str, Any], path: str, extras: Mapping[str, torch.Tensor] | None = None) -> str:
    """A vlkit VQA checkpoint (plus ``extras``) as the reference's ``BEST.pth`` / ``LAST.pth``, written atomically."""
    atomic_torch_save(to_clipvil(checkpoint["state_dict"], "vqa", extras), path)
    return path


def transplant_answer_head(
    state: dict[str, torch.Tensor], qa_answers: Sequence[str], vqa_answers: Sequence[str]
) -> tuple[dict[str, torch.Tensor], int]:
    """``vqa_classifier`` from a checkpoint's ``qa_head`` (the reference's ``--loadLXMERTQA``).

    Layers 0 and 2 are copied; output row i is the QA row of ``vqa_answers[i]`` where that answer
    is among ``qa_answers`` (pass both normalised the same way), else zero, bias included. Returns
    the new state (``qa_head`` removed) and how many answers were found.
    """
    out = {k: v for k, v in state.items() if not k.startswith("qa_head.")}
    for part in ("0.weight", "0.bias", "2.weight", "2.bias"):
        out[VQA_HEAD + part] = state["qa_head." + part]
    source_weight, source_bias = state["qa_head.3.weight"], state["qa_head.3.bias"]
    if len(qa_answers) != source_weight.shape[0]:
        raise ValueError(f"the checkpoint's QA head has {source_weight.shape[0]} answers but the answer table "
                         f"has {len(qa_answers)}; give the table it was trained with (qa_answers, qa_sets)")
    row_of = {answer: row for row, answer in enumerate(qa_answers)}
    weight = source_weight.new_zeros(len(vqa_answers), source_weight.shape[1])
    bias = source_bias.new_zeros(len(vqa_answers))
    mapped = 0
    for label, answer in enumerate(vqa_answers):
        if answer in row_of:
            weight[label], bias[label] = source_weight[row_of[answer]], source_bias[row_of[answer]]
            mapped += 1
    out[VQA_HEAD + "3.weight"], out[VQA_HEAD + "3.bias"] = weight, bias
    return out, mapped

"""Pre-trained weights into the classifier: VLC / ViLT / vlkit Lightning checkpoints, ALBEF /
GRIT-VLP ``{"model": ...}``, MAE ``{"model": ...}`` and timm ViT state dicts (fact sheet §8.1, §8.3).

Formats are detected and converted by ``vlkit.models.checkpoints``; here the vision tower is taken
out of the result (keys under ``transformer.``, where every vision format lands, or ALBEF's
``visual_encoder.``) with the prefix stripped, which is exactly what the reference's
``convert_vlc2mae.py`` keeps; everything else (text embeddings, pooler, heads, momentum copies) is
reported as ignored. Tensors are copied unchanged; only ``pos_embed`` is resampled (bicubic, CLS
row kept) when the checkpoint's grid differs from ``--input_size / patch``.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import torch
from torch import nn

from vlkit.utils.atomic import atomic_torch_save
from vlkit.imagenet.models import init_head
from vlkit.models.checkpoints import FORMATS, LoadReport, detect_format, fit_shapes, read_checkpoint

log = logging.getLogger(__name__)

VISION_PREFIXES = ("transformer.", "visual_encoder.")
HEAD_KEYS = ("head.weight", "head.bias")
CLASSIFIER_PREFIXES = ("head.", "fc_norm.", "norm.")
"""Model weights a pre-trained checkpoint may lack: the fresh classifier and whichever final norm
the pooling uses."""
MAE_CHECKPOINT_NAME = "mae_modelckpt"


def vision_weights(checkpoint: Mapping[str, Any], path: str = "") -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """``(ViT weights under timm / MAE names, detected format, ignored keys)`` of a checkpoint."""
    format = detect_format(checkpoint, path)
    state, _ = FORMATS[format].convert(checkpoint)
    vision, ignored = {}, []
    for key, value in state.items():
        prefix = next((p for p in VISION_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            ignored.append(key)
        else:
            vision[key[len(prefix):]] = value
    if "patch_embed.proj.weight" not in vision:
        raise ValueError(
            f"checkpoint {path!r} ({format} format) holds no vision transformer (no "
            f"{' or '.join(p + 'patch_embed.proj.weight' for p in VISION_PREFIXES)}); give a VLC / "
            "ViLT / ALBEF checkpoint or an MAE / timm ViT"
        )
    return vision, format, ignored


def _mismatch(key: str, source: torch.Size, target: torch.Size, hparams: Any) -> ValueError:
    if key.startswith("head."):
        return ValueError(
            f"the checkpoint's classifier {key} has shape {tuple(source)} but the model's is "
            f"{tuple(target)}: set --nb_classes {source[0]} to evaluate it"
        )
    return ValueError(
        f"checkpoint key {key!r} has shape {tuple(source)} but the model expects {tuple(target)}: pick "
        "the --model (or --patch_size / --embed_dim) the checkpoint was trained with"
    )


def _fit(model: nn.Module, state: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """Entries the model has, ``pos_embed`` resampled to its grid; the rest go to ``unexpected``."""
    return fit_shapes(state, model, report, mismatch_error=_mismatch)


def _check_architecture(report: LoadReport, path: str) -> None:
    body_missing = [key for key in report.missing if not key.startswith(CLASSIFIER_PREFIXES)]
    extra_blocks = [key for key in report.unexpected if key.startswith("blocks.")]
    if body_missing or extra_blocks:
        shown = (body_missing or extra_blocks)[:4]
        raise ValueError(
            f"checkpoint {path!r} does not fit the model: {len(body_missing)} of its weights are "
            f"missing and {len(extra_blocks)} extra block weights are present (e.g. {shown}); pick "
            "the --model (or --depth) the checkpoint was trained with"
        )


def load_state(model: nn.Module, state: dict[str, torch.Tensor], format: str, path: str,
               keep_head: bool = False) -> LoadReport:
    """Load ViT weights (timm / MAE names) into the classifier; see ``load_pretrained``."""
    report = LoadReport(format=format, path=path)
    if not keep_head:
        report.ignored += [key for key in HEAD_KEYS if key in state]
        state = {key: value for key, value in state.items() if key not in HEAD_KEYS}
    fitted = _fit(model, state, report)
    result = model.load_state_dict(fitted, strict=False)
    report.loaded, report.loaded_keys = len(fitted), sorted(fitted)
    report.missing = list(result.missing_keys)
    _check_architecture(report, path)
    if "head.weight" not in fitted:
        init_head(model)
    return report


def load_pretrained(model: nn.Module, path: str, keep_head: bool = False, trust_checkpoint: bool = False) -> LoadReport:
    """Load the vision tower of the checkpoint at ``path`` into the classifier (``--finetune``).

    The head stays fresh (truncated normal, std 2e-5) unless ``keep_head`` (evaluating a
    fine-tuned classifier). Missing weights other than ``head`` / ``fc_norm`` / ``norm``, or extra
    blocks, mean another architecture and raise an error naming the fix. ``trust_checkpoint``
    allows full unpickling (``vlkit.utils.safe_load``).
    """
    checkpoint = read_checkpoint(path, "--finetune", trust_checkpoint)
    state, format, ignored = vision_weights(checkpoint, path)
    report = load_state(model, state, format, path, keep_head)
    report.ignored = ignored + report.ignored
    return report


def load_resumed(model: nn.Module, checkpoint: Mapping[str, Any], path: str) -> LoadReport:
    """Load a ``--resume`` checkpoint's ``model`` (this script's or MAE's) with its head, strictly
    apart from ``pos_embed``, which is resampled when ``--input_size`` changed."""
    if not isinstance(checkpoint.get("model"), Mapping):
        raise ValueError(
            f"--resume {path!r} has no 'model' entry, so it is not a checkpoint of main_finetune.py; "
            "start from pre-trained weights with --finetune instead"
        )
    report = LoadReport(format="main_finetune", path=path)
    fitted = _fit(model, dict(checkpoint["model"]), report)
    missing = sorted(set(model.state_dict()) - set(fitted))
    if missing or report.unexpected:
        raise ValueError(
            f"--resume {path!r} does not match the model: missing {missing[:4]}, unexpected "
            f"{report.unexpected[:4]}; use the --model, --nb_classes and --global_pool / --cls_token "
            "it was trained with"
        )
    model.load_state_dict(fitted)
    report.loaded, report.loaded_keys = len(fitted), sorted(fitted)
    return report


def write_vision_checkpoint(source: str, out_dir: str, trust_checkpoint: bool = False) -> str:
    """The reference's ``convert_vlc2mae.py``: the vision tower of ``source`` (any format above,
    prefix stripped, decoder and ``mask_token`` kept) as ``{"model": ...}`` in
    ``out_dir/mae_modelckpt``, written atomically. Returns the file's path."""
    state, format, ignored = vision_weights(read_checkpoint(source, "--vlc_model", trust_checkpoint), source)
    path = os.path.join(out_dir, MAE_CHECKPOINT_NAME)
    atomic_torch_save({"model": state}, path)
    log.info("wrote %d vision tensors of %s checkpoint %s to %s (%d other keys left out)",
             len(state), format, source, path, len(ignored))
    return path

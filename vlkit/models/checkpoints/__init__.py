"""Checkpoint loading: read a file, detect its format, convert its keys, fit shapes, load.

Formats (one module each, tried in this order by ``format="auto"``): ``albef`` (ALBEF and
GRIT-VLP ``{"model": ...}``), ``lightning`` (VLC, ViLT, vlkit), ``meter`` (METER and vlkit's
co_attention), ``mae`` (also DeiT) (``{"model": unprefixed ViT keys}``) and
``timm`` (plain ViT state dict). A module offers ``matches(checkpoint)`` and ``convert(checkpoint)
-> (state dict in model key names, scope)``; ``scope`` is the key prefix the format fills
(``""`` = whole model), and only keys under it count as missing. A module may also offer
``ignored_keys(checkpoint)``: keys it leaves out on purpose (reported as ``ignored``).

Shapes are fitted in every format: ``*pos_embed`` and CLIP ``*positional_embedding`` tables are
resampled (bicubic, CLS row kept) to the model's grid; ``token_type_embeddings.weight`` keeps the rows both have, new rows copy row 1.
Any other shape difference is an error naming the key, both shapes and what to change.

A model may define ``adapt_checkpoint(state) -> state``: it runs on whole-model checkpoints after
conversion, to fill parts a variant has and the checkpoint lacks from parts it has (e.g. the
cross-attention family's paired NLVR2 fusion layers, or its VQA answer decoder).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from vlkit.models.checkpoints import albef, clipvil, lightning, mae, meter, timm_vit
from vlkit.models.pos_embed import grid_side, resample_pos_embed
from vlkit.utils.safe_load import safe_torch_load

log = logging.getLogger(__name__)

FORMATS = {"albef": albef, "lightning": lightning, "meter": meter, "clipvil": clipvil, "mae": mae,
           "timm": timm_vit}
VISION_TOWER_FORMATS = ("mae", "timm")
VISION_SCOPE = "transformer."
"""Where vision-tower formats put their keys; a model whose tower lives elsewhere names it in
``vision_tower_prefix``."""
TOKEN_TYPES_KEY = "token_type_embeddings.weight"
# keys whose last dimension is the model width (hidden_size) whatever the other sizes
HIDDEN_LAST_KEYS = ("text_embeddings.", "token_type_embeddings.", "transformer.cls_token",
                    "transformer.pos_embed", "transformer.patch_embed.proj.bias", "transformer.norm.")
HINT_CONFIG_KEYS = ("vit", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_ratio",
                    "max_text_len", "vocab_size", "image_size")


@dataclass
class LoadReport:
    """What a load did; every list holds model key names."""

    format: str
    path: str = ""
    loaded: int = 0
    loaded_keys: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    """Checkpoint keys left out on purpose (e.g. the text side when only the ViT is wanted)."""

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} tensors from {self.format} checkpoint {self.path}"]
        for label in ("missing", "unexpected", "resized", "ignored"):
            keys = getattr(self, label)
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                lines.append(f"  {label} ({len(keys)}): {shown}")
        return "\n".join(lines)


def read_checkpoint(path: str, config_key: str = "path", trust_checkpoint: bool = False) -> Mapping[str, Any]:
    """A checkpoint dict read on CPU with ``vlkit.utils.safe_load.safe_torch_load`` (weights only
    unless ``trust_checkpoint``); errors name the file and ``config_key``."""
    checkpoint = safe_torch_load(path, config_key, trust_checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{config_key}={path!r} holds a {type(checkpoint).__name__}, not a dict")
    return checkpoint


def detect_format(checkpoint: Mapping[str, Any], path: str = "") -> str:
    """The first format in ``FORMATS`` whose ``matches`` accepts the checkpoint."""
    for name, module in FORMATS.items():
        if module.matches(checkpoint):
            return name
    top = sorted(map(str, checkpoint))[:10]
    inner = next((checkpoint[k] for k in ("state_dict", "model") if isinstance(checkpoint.get(k), Mapping)), {})
    raise ValueError(
        f"checkpoint {path!r} matches no known format: top-level keys {top}, first weight keys "
        f"{sorted(map(str, inner))[:10]}. Supported: lightning (state_dict with 'transformer.' / "
        "'text_embeddings.' keys), meter (state_dict with 'vit_model.' / 'cross_modal_text_layers.' "
        "keys), mae ({'model': unprefixed ViT keys}), timm (unprefixed ViT "
        "state dict with 'patch_embed.proj.weight')"
    )


def _mismatch_error(key: str, source: torch.Size, target: torch.Size, hparams: Any) -> ValueError:
    rows_differ = len(source) == len(target) and source[0] != target[0]
    width_differs = len(source) == len(target) and source[-1] != target[-1]
    if key == "transformer.patch_embed.proj.weight" and width_differs:
        fix = (f"the checkpoint uses {source[-1]}-px patches and the model {target[-1]}-px ones: "
               "build the model with the checkpoint's vit and patch_size (ViLT checkpoints: "
               "`with vit32_base`)")
    elif key == "transformer.patch_embed.proj.weight" and rows_differ:
        fix = f"set hidden_size={source[0]}"
    elif key.startswith(HIDDEN_LAST_KEYS) and width_differs:
        fix = f"set hidden_size={source[-1]}"
    elif key == "text_embeddings.position_embeddings.weight" and rows_differ:
        fix = f"set max_text_len={source[0]}"
    elif rows_differ and ("word_embeddings" in key or key in ("mlm_score.decoder.weight", "mlm_score.bias")):
        fix = f"set vocab_size={source[0]}"
    else:
        fix = ("build the model with the checkpoint's sizes (hidden_size, num_heads, mlp_ratio, "
               "mae_decoder_dim, task label counts)")
    if isinstance(hparams, Mapping):
        known = {k: hparams[k] for k in HINT_CONFIG_KEYS if k in hparams}
        fix += f"; the checkpoint's config has {known}"
    return ValueError(
        f"checkpoint key {key!r} has shape {tuple(source)} but the model expects {tuple(target)}: {fix}"
    )


def _fit_token_types(source: torch.Tensor, rows: int) -> torch.Tensor:
    """Keep the rows both have; rows the checkpoint lacks copy its row 1."""
    fitted = source[1:2].repeat(rows, 1)
    shared = min(rows, source.shape[0])
    fitted[:shared] = source[:shared]
    return fitted


def fit_shapes(
    state: dict[str, torch.Tensor], model: nn.Module, report: LoadReport, hparams: Any = None,
    mismatch_error: Callable[[str, torch.Size, torch.Size, Any], Exception] | None = None,
) -> dict[str, torch.Tensor]:
    """The entries the model has, shapes made to match (``pos_embed`` resampled, token types
    fitted); the others go to ``report.unexpected``. Any other shape difference raises
    ``mismatch_error(key, checkpoint shape, model shape, hparams)`` (default: the loader's)."""
    targets = model.state_dict()
    fitted = {}
    for key, value in state.items():
        if key not in targets:
            report.unexpected.append(key)
            continue
        target = targets[key].shape
        if value.shape != target:
            same_width = value.dim() == len(target) and value.shape[-1] == target[-1]
            if key.endswith("pos_embed") and value.dim() == 3 and same_width:
                value = resample_pos_embed(value, grid_side(targets[key]), key=key)
            elif key.endswith("positional_embedding") and value.dim() == 2 and same_width:  # CLIP's (1 + G², D)
                value = resample_pos_embed(value[None], grid_side(targets[key][None]), key=key)[0]
            elif key == TOKEN_TYPES_KEY and value.dim() == 2 and same_width:
                value = _fit_token_types(value, target[0])
            else:
                raise (mismatch_error or _mismatch_error)(key, value.shape, target, hparams)
            report.resized.append(key)
        fitted[key] = value
    return fitted


def _into_vision_tower(model: nn.Module, state: dict, scope: str) -> tuple[dict, str]:
    """Vision-tower formats fill ``transformer.``; move them to the model's ``vision_tower_prefix``
    (``visual_encoder.`` in the cross-attention family)."""
    target = getattr(model, "vision_tower_prefix", VISION_SCOPE)
    if scope != VISION_SCOPE or target == VISION_SCOPE:
        return state, scope
    return {target + key[len(VISION_SCOPE):]: value for key, value in state.items()}, target


def apply_checkpoint(
    model: nn.Module, checkpoint: Mapping[str, Any], format: str, path: str = "", strict: bool = False
) -> LoadReport:
    """Convert an already-read checkpoint of ``format`` and load it into ``model``."""
    if format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {format!r}; choose one of {list(FORMATS)} or 'auto'")
    if not FORMATS[format].matches(checkpoint):
        raise ValueError(f"checkpoint {path!r} is not in the {format!r} layout; try format='auto'")
    state, scope = FORMATS[format].convert(checkpoint)
    state, scope = _into_vision_tower(model, state, scope)
    adapt = getattr(model, "adapt_checkpoint", None)
    if adapt is not None and scope == "":
        state = adapt(state)
    report = LoadReport(format=format, path=path)
    ignored_keys = getattr(FORMATS[format], "ignored_keys", None)
    report.ignored = ignored_keys(checkpoint) if ignored_keys else []
    hparams = checkpoint.get("hyper_parameters", {})
    hparams = hparams.get("config") if isinstance(hparams, Mapping) else None
    fitted = fit_shapes(state, model, report, hparams)
    result = model.load_state_dict(fitted, strict=False)
    report.loaded = len(fitted)
    report.loaded_keys = sorted(fitted)
    report.missing = [key for key in result.missing_keys if key.startswith(scope)]
    if strict and (report.missing or report.unexpected):
        raise RuntimeError(f"strict load failed:\n{report}")
    return report


def load_checkpoint(
    model: nn.Module, path: str, format: str = "auto", strict: bool = False, config_key: str = "path",
    trust_checkpoint: bool = False,
) -> LoadReport:
    """Read ``path`` and load it into ``model`` (``format``: ``auto`` or a key of ``FORMATS``).

    ``strict`` raises when keys are missing or unexpected; ``config_key`` names the setting the
    path came from in error messages; ``trust_checkpoint`` allows full unpickling.
    """
    checkpoint = read_checkpoint(path, config_key, trust_checkpoint)
    chosen = detect_format(checkpoint, path) if format == "auto" else format
    return apply_checkpoint(model, checkpoint, chosen, path, strict)

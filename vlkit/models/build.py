"""Model families by name, and building a model from a config (with its checkpoints applied)."""
from __future__ import annotations

import difflib
import logging
from typing import Any, Callable

from torch import nn

from vlkit.models.checkpoints import (
    VISION_TOWER_FORMATS,
    LoadReport,
    apply_checkpoint,
    detect_format,
    load_checkpoint,
    read_checkpoint,
)
from vlkit.models.fusion.clipvil import build_clipvil
from vlkit.models.fusion.co_attention import CoAttentionModel
from vlkit.models.fusion.cross_attention import CrossAttentionModel
from vlkit.models.fusion.single_stream import SingleStreamModel
from vlkit.models.momentum import attach_momentum, copy_online_into_momentum

__all__ = ["MODEL_FAMILIES", "LoadReport", "build_model", "build_model_with_reports", "load_checkpoint"]

log = logging.getLogger(__name__)

MODEL_FAMILIES: dict[str, Callable[[Any], nn.Module]] = {
    "single_stream": SingleStreamModel,
    "cross_attention": CrossAttentionModel,
    "co_attention": CoAttentionModel,
    "clipvil": build_clipvil,
}


def _family(name: str) -> Callable[[Any], nn.Module]:
    if name not in MODEL_FAMILIES:
        close = difflib.get_close_matches(name, MODEL_FAMILIES, n=1, cutoff=0.0)
        raise ValueError(
            f"config key model={name!r} is not a model family; did you mean {close[0]!r}? "
            f"Known: {sorted(MODEL_FAMILIES)}"
        )
    return MODEL_FAMILIES[name]


def _load_pretrained_vision_tower(model: nn.Module, path: str, trust_checkpoint: bool) -> LoadReport:
    checkpoint = read_checkpoint(path, "pretrain_path", trust_checkpoint)
    format = detect_format(checkpoint, path)
    if format not in VISION_TOWER_FORMATS:
        raise ValueError(
            f"pretrain_path={path!r} is a {format} checkpoint of the whole model; pretrain_path "
            f"takes a vision-tower checkpoint ({', '.join(VISION_TOWER_FORMATS)}): pass this "
            "file as load_path instead"
        )
    return apply_checkpoint(model, checkpoint, format, path)


def build_model_with_reports(cfg: Any) -> tuple[nn.Module, list[LoadReport]]:
    """The ``cfg.model`` family built from ``cfg`` (with ALBEF's momentum model and queue when
    ``cfg.momentum`` > 0), then ``pretrain_path`` (vision tower) and ``load_path`` (whole model)
    applied in that order; each load's report is logged and returned. A momentum model that no
    checkpoint filled starts as a copy of the loaded online weights."""
    model = _family(cfg.model)(cfg)
    attach_momentum(model, cfg)
    reports = []
    if cfg.pretrain_path:
        reports.append(_load_pretrained_vision_tower(model, cfg.pretrain_path, cfg.trust_checkpoint))
        log.info("pretrain_path: %s", reports[-1])
    if cfg.load_path:
        reports.append(load_checkpoint(model, cfg.load_path, config_key="load_path",
                                       trust_checkpoint=cfg.trust_checkpoint))
        log.info("load_path: %s", reports[-1])
    if hasattr(model, "momentum_model") and reports:
        loaded = (key for report in reports for key in report.loaded_keys)
        if not any(key.startswith("momentum_model.") for key in loaded):
            copy_online_into_momentum(model)
            log.info("the checkpoints hold no momentum model: it starts as a copy of the loaded weights")
    return model, reports


def build_model(cfg: Any) -> nn.Module:
    """``build_model_with_reports`` without the reports."""
    return build_model_with_reports(cfg)[0]

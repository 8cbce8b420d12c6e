"""Optimizer parameter groups, the optimizer and the LR schedule (fact sheet §7.3–7.4).

Every group carries ``lr`` (= ``learning_rate * lr_scale``), ``lr_scale`` and ``weight_decay``.
Schedules multiply each group's own starting LR, so relative scales hold for the whole run.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_polynomial_decay_schedule_with_warmup

NO_DECAY_NAME_PARTS = (
    "bias", "LayerNorm.bias", "LayerNorm.weight", "norm.bias", "norm.weight", "norm1.", "norm2."
)
"""Vanilla grouping: a parameter whose name contains one of these gets no weight decay."""
HEAD_NAME_PARTS = ("vqa_classifier", "nlvr2_classifier", "snli_classifier")
"""A parameter whose name contains one of these is a task head and trains at ``lr * lr_mult``."""
VANILLA_GROUP_ORDER = ((False, False), (False, True), (True, False), (True, True))
"""(is head, no decay) of the vanilla groups, in the reference's order."""
OPTIMIZERS = ("adamw", "adam", "sgd")
SGD_MOMENTUM = 0.9


def is_head(name: str) -> bool:
    """Whether a parameter belongs to a task head (see ``HEAD_NAME_PARTS``)."""
    return any(part in name for part in HEAD_NAME_PARTS)


def _group(params: list[nn.Parameter], cfg: Any, lr_scale: float, weight_decay: float) -> dict:
    lr = cfg.learning_rate * lr_scale
    return {"params": params, "lr": lr, "lr_scale": lr_scale, "weight_decay": weight_decay}


def param_groups_vanilla(model: nn.Module, cfg: Any) -> list[dict]:
    """The reference's pre-training groups: {decay, no decay} x {body, head}, trainable only.

    No decay when the name contains one of ``NO_DECAY_NAME_PARTS``; heads get ``lr * lr_mult``.
    Empty groups are dropped; the rest keep the order body/decay, body/no-decay, head/decay,
    head/no-decay.
    """
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {key: [] for key in VANILLA_GROUP_ORDER}
    for name, param in model.named_parameters():
        if param.requires_grad:
            no_decay = any(part in name for part in NO_DECAY_NAME_PARTS)
            buckets[(is_head(name), no_decay)].append(param)
    return [
        _group(params, cfg, cfg.lr_mult if head else 1.0, 0.0 if no_decay else cfg.weight_decay)
        for (head, no_decay), params in buckets.items()
        if params
    ]


def param_groups_layer_decay(model: nn.Module, cfg: Any) -> list[dict]:
    """Fine-tuning groups with layer-wise LR decay, trainable parameters only.

    The model supplies ``layer_id(name)`` in [0, L] and ``num_layers``, with L = num_layers + 1.
    A parameter's LR scale is ``layer_decay ** (L - layer_id)``, times ``lr_mult`` for heads
    (names containing ``HEAD_NAME_PARTS``); 1-D parameters (biases, norm weights) and the names a
    model lists in ``no_weight_decay()`` (timm's convention: ``pos_embed``, ``cls_token``) get no
    weight decay. Unlike the reference, which ignores ``lr_mult`` on this path (fact sheet §9.3),
    heads here do get it; ``lr_mult=1`` reproduces the reference. Groups are ordered by layer.
    """
    if not 0 < cfg.layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1]; got {cfg.layer_decay}")
    if not (callable(getattr(model, "layer_id", None)) and hasattr(model, "num_layers")):
        raise TypeError(
            f"{type(model).__name__} lacks layer_id(name) or num_layers, which layer-wise LR decay "
            f"needs; add them to the model or set layer_decay=1"
        )
    top = model.num_layers + 1
    no_decay_names = set(model.no_weight_decay()) if callable(getattr(model, "no_weight_decay", None)) else set()
    buckets: dict[tuple[int, bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = model.layer_id(name)
        if not 0 <= layer <= top:
            raise ValueError(f"layer_id({name!r}) = {layer} is outside [0, {top}] (num_layers + 1)")
        no_decay = param.ndim == 1 or name in no_decay_names
        buckets.setdefault((layer, is_head(name), no_decay), []).append(param)
    return [
        _group(params, cfg, cfg.layer_decay ** (top - layer) * (cfg.lr_mult if head else 1.0),
               0.0 if no_decay else cfg.weight_decay)
        for (layer, head, no_decay), params in sorted(buckets.items(), key=lambda item: item[0])
    ]


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optim_type`` over the groups that ``cfg.is_pretrain`` selects.

    Pre-training (and fine-tuning with ``layer_decay=1``) uses the vanilla groups, fine-tuning the
    layer-decay groups. ``adamw`` is ``torch.optim.AdamW`` (decoupled decay, bias correction), the
    reference's HF AdamW up to where eps enters (HF adds it before the bias correction of the second
    moment) and whether decay uses the pre- or post-update weights: negligible at eps=1e-8. ``adam``
    (L2 decay through the groups, with ``adam_betas``/``adam_eps``) and ``sgd`` (momentum 0.9) are
    the alternatives.
    """
    if cfg.optim_type not in OPTIMIZERS:
        raise ValueError(f"unknown optim_type {cfg.optim_type!r}; valid: {list(OPTIMIZERS)}")
    if cfg.is_pretrain or cfg.layer_decay == 1:
        groups = param_groups_vanilla(model, cfg)
    else:
        groups = param_groups_layer_decay(model, cfg)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter to optimize")
    if cfg.optim_type == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=SGD_MOMENTUM)
    adam_class = torch.optim.AdamW if cfg.optim_type == "adamw" else torch.optim.Adam
    return adam_class(groups, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps)


def warmup_steps_from(cfg: Any, total_steps: int) -> int:
    """Warm-up length in optimizer steps from ``cfg.warmup_steps``.

    An int is a step count; a float below 1 is a fraction of ``total_steps`` (truncated). A float of
    1 or more is read as a step count too, whereas the reference treats every float as a fraction
    (so there ``1.0`` would mean warming up for the whole run).
    """
    value = cfg.warmup_steps
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"warmup_steps must be a step count or a fraction in [0, 1); got {value!r}")
    if isinstance(value, float) and value < 1:
        return int(total_steps * value)
    return int(value)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Any, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then decay over ``total_steps``; call ``step()`` once per optimizer step.

    A numeric ``decay_power`` gives polynomial decay to ``end_lr`` with that power (1 = linear);
    ``"cosine"`` gives a half-cosine to ``end_lr``. ``total_steps`` is the length of the decay
    (the trainer passes ``lr_schedule_epochs`` worth of steps when that is set).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1; got {total_steps}")
    warmup = warmup_steps_from(cfg, total_steps)
    if warmup >= total_steps:
        raise ValueError(
            f"warmup_steps={cfg.warmup_steps!r} gives {warmup} warm-up steps, not fewer than the "
            f"{total_steps} total steps; lower warmup_steps or train longer"
        )
    power = cfg.decay_power
    if power == "cosine":
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, warmup, total_steps, min_lr_rate=cfg.end_lr / cfg.learning_rate
        )
    if isinstance(power, (int, float)) and not isinstance(power, bool):
        return get_polynomial_decay_schedule_with_warmup(
            optimizer, warmup, total_steps, lr_end=cfg.end_lr, power=power
        )
    raise ValueError(f"decay_power must be a number or 'cosine'; got {power!r}")

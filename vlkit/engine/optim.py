"""Optimizer parameter groups, the optimizer and the LR schedule (fact sheet §7.3–7.4).

Every group carries ``lr`` (= ``learning_rate * lr_scale``), ``lr_scale`` and ``weight_decay``.
Schedules multiply each group's own starting LR, so relative scales hold for the whole run.
"""
from __future__ import annotations

import bisect
from typing import Any

import torch
from torch import nn
from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_polynomial_decay_schedule_with_warmup

from vlkit.config.schema import check_allowed_value

NO_DECAY_NAME_PARTS = (
    "bias", "LayerNorm.bias", "LayerNorm.weight", "norm.bias", "norm.weight", "norm1.", "norm2."
)
"""Vanilla grouping: a parameter whose name contains one of these gets no weight decay."""
HEAD_NAME_PARTS = ("vqa_classifier", "nlvr2_classifier", "snli_classifier")
"""A parameter whose name contains one of these is a task head and trains at ``lr * lr_mult``
(a model may name its own heads in ``lr_head_name_parts``, as METER's)."""
LR_KINDS = ("body", "head", "cross_modal")
"""Parameter kinds with their own LR multiplier, in the reference's group order."""
OPTIMIZERS = ("adamw", "adam", "sgd")
SGD_MOMENTUM = 0.9
VISUAL_OPTIMIZERS = ("sgd", "adamw")
VISUAL_LR_GAMMA = 0.1
"""Factor of the visual optimizer's LR at each of ``visual_lr_milestones`` (CLIP-ViL's step schedule)."""


def lr_kind(model: nn.Module, name: str) -> str:
    """``head`` when the name contains one of the model's ``lr_head_name_parts`` (default
    ``HEAD_NAME_PARTS``), else ``cross_modal`` when it contains one of its
    ``lr_cross_modal_name_parts`` (METER: ``cross_modal``; none by default), else ``body``."""
    if any(part in name for part in getattr(model, "lr_head_name_parts", HEAD_NAME_PARTS)):
        return "head"
    if any(part in name for part in getattr(model, "lr_cross_modal_name_parts", ())):
        return "cross_modal"
    return "body"


def lr_mult(cfg: Any, kind: str) -> float:
    """LR multiplier of a parameter kind: heads ``lr_mult_head`` (None: ``lr_mult``), the
    cross-modal part ``lr_mult_cross_modal``, the body 1."""
    if kind == "head":
        head = getattr(cfg, "lr_mult_head", None)
        return cfg.lr_mult if head is None else head
    return getattr(cfg, "lr_mult_cross_modal", 1.0) if kind == "cross_modal" else 1.0


def _group(params: list[nn.Parameter], cfg: Any, lr_scale: float, weight_decay: float) -> dict:
    lr = cfg.learning_rate * lr_scale
    return {"params": params, "lr": lr, "lr_scale": lr_scale, "weight_decay": weight_decay}


def _trainable(model: nn.Module, exclude: tuple[str, ...]):
    """``(name, parameter)`` of the trainable parameters whose names start with none of ``exclude``."""
    for name, param in model.named_parameters():
        if param.requires_grad and not (exclude and name.startswith(exclude)):
            yield name, param


def param_groups_vanilla(model: nn.Module, cfg: Any, exclude: tuple[str, ...] = ()) -> list[dict]:
    """The reference's groups: {body, head, cross-modal} x {decay, no decay}, trainable only
    (VLC/ViLT have no cross-modal kind; METER has all six, meter_elip.md §2.9).

    No decay when the name contains one of ``NO_DECAY_NAME_PARTS``; each kind trains at
    ``lr * lr_mult(cfg, kind)`` (see ``lr_kind``). Empty groups are dropped; the rest keep the
    order body/decay, body/no-decay, head/decay, head/no-decay, cross-modal/decay,
    cross-modal/no-decay. Names starting with one of ``exclude`` are left out (another optimizer's).
    """
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {
        (kind, no_decay): [] for kind in LR_KINDS for no_decay in (False, True)
    }
    for name, param in _trainable(model, exclude):
        no_decay = any(part in name for part in NO_DECAY_NAME_PARTS)
        buckets[(lr_kind(model, name), no_decay)].append(param)
    return [
        _group(params, cfg, lr_mult(cfg, kind), 0.0 if no_decay else cfg.weight_decay)
        for (kind, no_decay), params in buckets.items()
        if params
    ]


def param_groups_layer_decay(model: nn.Module, cfg: Any, exclude: tuple[str, ...] = ()) -> list[dict]:
    """Fine-tuning groups with layer-wise LR decay, trainable parameters only.

    The model supplies ``layer_id(name)`` in [0, L] and ``num_layers``, with L = num_layers + 1.
    A parameter's LR scale is ``layer_decay ** (L - layer_id)``, times ``lr_mult(cfg, kind)``
    (heads: ``lr_mult``, see ``lr_kind``); 1-D parameters (biases, norm weights) and the names a
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
    buckets: dict[tuple[int, str, bool], list[nn.Parameter]] = {}
    for name, param in _trainable(model, exclude):
        layer = model.layer_id(name)
        if not 0 <= layer <= top:
            raise ValueError(f"layer_id({name!r}) = {layer} is outside [0, {top}] (num_layers + 1)")
        no_decay = param.ndim == 1 or name in no_decay_names
        buckets.setdefault((layer, lr_kind(model, name), no_decay), []).append(param)
    return [
        _group(params, cfg, cfg.layer_decay ** (top - layer) * lr_mult(cfg, kind),
               0.0 if no_decay else cfg.weight_decay)
        for (layer, kind, no_decay), params in sorted(
            buckets.items(), key=lambda item: (item[0][0], LR_KINDS.index(item[0][1]), item[0][2])
        )
    ]


def build_optimizer(model: nn.Module, cfg: Any, exclude: tuple[str, ...] = ()) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optim_type`` over the groups that ``cfg.is_pretrain`` selects.

    Pre-training (and fine-tuning with ``layer_decay=1``) uses the vanilla groups, fine-tuning the
    layer-decay groups. ``adamw`` is ``torch.optim.AdamW`` (decoupled decay, bias correction), the
    reference's HF AdamW up to where eps enters (HF adds it before the bias correction of the second
    moment) and whether decay uses the pre- or post-update weights: negligible at eps=1e-8. ``adam``
    (L2 decay through the groups, with ``adam_betas``/``adam_eps``) and ``sgd`` (momentum 0.9) are
    the alternatives. Parameters whose names start with one of ``exclude`` are left out.
    """
    if cfg.optim_type not in OPTIMIZERS:
        raise ValueError(f"unknown optim_type {cfg.optim_type!r}; valid: {list(OPTIMIZERS)}")
    if cfg.is_pretrain or cfg.layer_decay == 1:
        groups = param_groups_vanilla(model, cfg, exclude)
    else:
        groups = param_groups_layer_decay(model, cfg, exclude)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter to optimize")
    kernels = kernel_options(cfg.optimizer_impl, groups)
    if cfg.optim_type == "sgd":
        return torch.optim.SGD(groups, lr=cfg.learning_rate, momentum=SGD_MOMENTUM, **kernels)
    adam_class = torch.optim.AdamW if cfg.optim_type == "adamw" else torch.optim.Adam
    return adam_class(groups, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, **kernels)


def kernel_options(impl: str, groups: list[dict]) -> dict[str, bool]:
    """The ``fused`` / ``foreach`` keyword of a torch optimizer for ``optimizer_impl``: ``auto``
    is fused when every parameter is on CUDA, foreach otherwise."""
    check_allowed_value("optimizer_impl", impl)
    if impl == "auto":
        on_cuda = all(p.is_cuda for group in groups for p in group["params"])
        impl = "fused" if on_cuda else "foreach"
    if impl == "fused":
        return {"fused": True}
    return {"foreach": impl == "foreach"}


def kernel_name(optimizer: torch.optim.Optimizer) -> str:
    """``fused``, ``foreach`` or ``for_loop``: the kernels ``optimizer`` steps with."""
    if optimizer.defaults.get("fused"):
        return "fused"
    return "foreach" if optimizer.defaults.get("foreach") else "for_loop"


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


def visual_prefix(model: nn.Module, cfg: Any) -> str | None:
    """The parameter-name prefix of the backbone that ``cfg.visual_optimizer`` trains (None: no
    separate optimizer); the model names it in ``visual_backbone_prefix``."""
    if not cfg.visual_optimizer:
        return None
    if cfg.visual_optimizer not in VISUAL_OPTIMIZERS:
        raise ValueError(f"visual_optimizer={cfg.visual_optimizer!r}: choose one of {list(VISUAL_OPTIMIZERS)} or ''")
    prefix = getattr(model, "visual_backbone_prefix", None)
    if not prefix:
        raise ValueError(
            f"visual_optimizer={cfg.visual_optimizer!r} but {type(model).__name__} names no visual backbone "
            "(visual_backbone_prefix); set visual_optimizer='' or use model=clipvil"
        )
    return prefix


def build_visual_optimizer(model: nn.Module, cfg: Any, prefix: str) -> torch.optim.Optimizer:
    """SGD (``visual_momentum``) or AdamW over the trainable parameters under ``prefix``, one group
    with ``visual_learning_rate`` and ``visual_weight_decay`` (CLIP-ViL's optimizer for CLIP)."""
    params = [param for name, param in model.named_parameters() if param.requires_grad and name.startswith(prefix)]
    if not params:
        raise ValueError(f"visual_optimizer={cfg.visual_optimizer!r}: no trainable parameter under {prefix!r} "
                         "(is the backbone frozen?); set visual_optimizer=''")
    group = {"params": params, "lr": cfg.visual_learning_rate, "lr_scale": 1.0,
             "weight_decay": cfg.visual_weight_decay}
    kernels = kernel_options(cfg.optimizer_impl, [group])
    if cfg.visual_optimizer == "sgd":
        return torch.optim.SGD([group], lr=cfg.visual_learning_rate, momentum=cfg.visual_momentum, **kernels)
    return torch.optim.AdamW([group], lr=cfg.visual_learning_rate, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                             **kernels)


def build_optimizers(model: nn.Module, cfg: Any) -> list[torch.optim.Optimizer]:
    """``[main]``, or ``[main, visual]`` with ``visual_optimizer``: the visual backbone's
    parameters then belong to the second optimizer only."""
    prefix = visual_prefix(model, cfg)
    if prefix is None:
        return [build_optimizer(model, cfg)]
    return [build_optimizer(model, cfg, exclude=(prefix,)), build_visual_optimizer(model, cfg, prefix)]


def build_milestone_scheduler(
    optimizer: torch.optim.Optimizer, milestones: list[int], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """LR × ``VISUAL_LR_GAMMA`` ** (milestones <= the current 0-based epoch), stepped once per
    optimizer step; ``steps_per_epoch`` optimizer steps make an epoch. No warm-up (CLIP-ViL's SGD)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1; got {steps_per_epoch}")
    edges = sorted(int(m) for m in milestones)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: VISUAL_LR_GAMMA ** bisect.bisect_right(edges, step // steps_per_epoch)
    )


def build_schedulers(
    optimizers: list[torch.optim.Optimizer], cfg: Any, total_steps: int, steps_per_epoch: int
) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """The main optimizer's warm-up/decay schedule, and for a visual optimizer its epoch milestones."""
    schedulers = [build_scheduler(optimizers[0], cfg, total_steps)]
    schedulers += [build_milestone_scheduler(opt, list(cfg.visual_lr_milestones), steps_per_epoch)
                   for opt in optimizers[1:]]
    return schedulers

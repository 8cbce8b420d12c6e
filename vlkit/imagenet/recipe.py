"""The fine-tuning recipe from timm's parts (fact sheet §8.4, §8.5): learning rate from ``--blr``,
layer-wise decay groups, AdamW, cosine schedule with warm-up, mixup / cutmix and the loss.

The reference has no EMA of the weights, so neither does this.
"""
from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from torch import nn

from vlkit.engine.optim import kernel_options, param_groups_layer_decay

LR_REFERENCE_BATCH = 256


def effective_batch_size(args: argparse.Namespace, world_size: int) -> int:
    """Images per optimizer step over all processes: batch_size x accum_iter x world size."""
    return args.batch_size * args.accum_iter * world_size


def peak_lr(args: argparse.Namespace, world_size: int) -> float:
    """``--lr`` when given, else ``blr x effective batch / 256``."""
    if args.lr is not None:
        return args.lr
    return args.blr * effective_batch_size(args, world_size) / LR_REFERENCE_BATCH


def param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """vlkit's layer-decay groups (``engine.optim``), which are MAE's for ``ViTClassifier``: with
    L = depth + 1, ``cls_token`` / ``pos_embed`` / ``patch_embed`` are layer 0, ``blocks.i`` layer
    i + 1 and the rest (norms, head) layer L; ``lr_scale = layer_decay ** (L - layer)``. 1-D
    parameters, ``pos_embed`` and ``cls_token`` get no weight decay.

    Each group's ``initial_lr`` is the unscaled ``lr``: timm's scheduler starts from it and
    multiplies by the group's ``lr_scale`` itself."""
    cfg = SimpleNamespace(learning_rate=lr, weight_decay=weight_decay, layer_decay=layer_decay, lr_mult=1.0)
    groups = param_groups_layer_decay(model, cfg)
    for group in groups:
        group["initial_lr"] = lr
    return groups


def build_optimizer(model: nn.Module, args: argparse.Namespace, lr: float) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` (betas 0.9, 0.999) over the layer-decay groups; fused kernels on CUDA,
    foreach elsewhere (``--optimizer_impl``)."""
    groups = param_groups(model, lr, args.weight_decay, args.layer_decay)
    return torch.optim.AdamW(groups, lr=lr, **kernel_options(getattr(args, "optimizer_impl", "auto"), groups))


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace,
                    iters_per_epoch: int) -> CosineLRScheduler:
    """Linear warm-up from 0 over ``warmup_epochs``, then a half cosine to ``min_lr`` at
    ``epochs``; every group's LR is the schedule times its ``lr_scale``.

    Counted in loader iterations: call ``step_update(epoch * iters_per_epoch + i)`` at the first
    micro-batch of each optimizer step, as the reference sets the LR at fractional epochs.
    """
    warmup = args.warmup_epochs * iters_per_epoch
    decay = max(1, (args.epochs - args.warmup_epochs) * iters_per_epoch)
    return CosineLRScheduler(
        optimizer, t_initial=decay, lr_min=args.min_lr, warmup_t=warmup, warmup_lr_init=0.0,
        warmup_prefix=True, t_in_epochs=False,
    )


def build_mixup(args: argparse.Namespace) -> Mixup | None:
    """timm's ``Mixup`` (label smoothing included) when ``--mixup``, ``--cutmix`` or
    ``--cutmix_minmax`` is set, else None."""
    if not (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None):
        return None
    return Mixup(
        mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
        prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
        label_smoothing=args.smoothing, num_classes=args.nb_classes,
    )


def build_criterion(args: argparse.Namespace, mixup: Mixup | None) -> nn.Module:
    """Soft-target cross-entropy with mixup (the targets carry the smoothing), else label
    smoothing when ``--smoothing`` > 0, else plain cross-entropy."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if args.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return nn.CrossEntropyLoss()

"""One training epoch: LR set at fractional epochs, mixup, gradient accumulation (DDP / FSDP
gradient sync only on the last micro-batch), AMP with a GradScaler on CUDA (bf16 without one
under fsdp), optional gradient clipping (of sharded ``DTensor`` gradients too)."""
from __future__ import annotations

import argparse
import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from timm.data import Mixup
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.utils.data import DataLoader

from vlkit.engine.progress import ProgressBar
from vlkit.imagenet.evaluate import autocast
from vlkit.utils import distributed

LOG_EVERY = 20
"""Loader iterations between ``train`` records (the reference prints every 20)."""


@dataclass
class EpochContext:
    """What an epoch needs besides the model and data."""

    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    scaler: torch.amp.GradScaler
    mixup: Mixup | None
    device: torch.device
    progress: ProgressBar
    record: Callable[[dict], None]
    """Receives ``train`` records (rank 0 writes them)."""
    amp_dtype: torch.dtype = torch.float16
    """The CUDA autocast dtype (``sharding.amp_dtype``)."""


def _max_lr(optimizer: torch.optim.Optimizer) -> float:
    return max(group["lr"] for group in optimizer.param_groups)


def _gradient_sync(model: nn.Module, sync: bool):
    """Reduce gradients over the processes only when ``sync`` (DDP's ``no_sync``, FSDP2's flag)."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if sync or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def train_one_epoch(model: nn.Module, loader: DataLoader, epoch: int, args: argparse.Namespace,
                    ctx: EpochContext) -> dict[str, float]:
    """Train one epoch; returns the mean of the per-iteration losses over every process, the mean
    of the largest group LR, and the unreadable files replaced (summed over processes)."""
    model.train()
    ctx.optimizer.zero_grad(set_to_none=True)
    iters = len(loader)
    totals = torch.zeros(4, dtype=torch.float64, device=ctx.device)  # loss, lr, iterations, skipped
    interval = torch.zeros(2, dtype=torch.float64, device=ctx.device)  # loss, iterations
    started = time.perf_counter()
    for i, (images, targets, skipped) in enumerate(loader):
        if i % args.accum_iter == 0:
            ctx.scheduler.step_update(epoch * iters + i)
        images = images.to(ctx.device, non_blocking=True)
        targets = targets.to(ctx.device, non_blocking=True)
        if ctx.mixup is not None:
            images, targets = ctx.mixup(images, targets)
        sync = (i + 1) % args.accum_iter == 0
        # the epoch's last micro-batch reduces too: its gradients are then dropped by zero_grad, as
        # the reference drops them (FSDP2 would keep unreduced ones outside .grad, for the next epoch)
        with _gradient_sync(model, sync or i + 1 == iters):
            with autocast(ctx.device, ctx.amp_dtype):
                loss = ctx.criterion(model(images), targets)
            ctx.scaler.scale(loss / args.accum_iter).backward()
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"loss is {loss_value} at epoch {epoch}, iteration {i}: training diverged; lower --lr / "
                "--blr or set --clip_grad"
            )
        if sync:
            if args.clip_grad is not None:
                ctx.scaler.unscale_(ctx.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)  # global norm of DTensors too
            ctx.scaler.step(ctx.optimizer)
            ctx.scaler.update()
            ctx.optimizer.zero_grad(set_to_none=True)
        lr = _max_lr(ctx.optimizer)
        totals += torch.tensor([loss_value, lr, 1.0, skipped], dtype=torch.float64, device=ctx.device)
        interval += torch.tensor([loss_value, 1.0], dtype=torch.float64, device=ctx.device)
        world = distributed.get_world_size()
        rate = (i + 1) * args.batch_size * world / max(time.perf_counter() - started, 1e-9)
        ctx.progress.advance(loss=loss_value, samples_per_s=rate)
        if (i + 1) % LOG_EVERY == 0 or i + 1 == iters:
            distributed.all_reduce_sum(interval)
            ctx.record({"event": "train", "step": epoch * iters + i + 1, "epoch": epoch + (i + 1) / iters,
                        "train/loss": interval[0].item() / interval[1].item(), "train/lr": lr,
                        "samples_per_s": rate})
            interval.zero_()
    distributed.all_reduce_sum(totals)
    loss_sum, lr_sum, count, skipped_sum = totals.tolist()
    return {"lr": lr_sum / count, "loss": loss_sum / count, "num_skipped": int(skipped_sum)}

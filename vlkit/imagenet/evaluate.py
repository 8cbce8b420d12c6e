"""Top-1 / top-5 accuracy and cross-entropy over the validation set, from exact counts.

Each process sums its own images' losses and hits; with a sharded loader (``--dist_eval``) the
sums are added across processes, so every image counts once whatever the world size (the
reference's padded ``DistributedSampler`` counted some twice and averaged per-batch losses).

Under ``--strategy fsdp`` the model gathers its parameters inside forward (a collective), so every
process runs as many forward passes as the one with the most batches: a process with fewer (its
shard of an odd-sized set) or with a batch of unreadable files only runs the model on a blank
image and leaves the output out of the sums.
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.utils.data import DataLoader

from vlkit.engine.progress import ProgressBar
from vlkit.utils import distributed

TOP_K = 5
"""The second accuracy reported; with fewer classes it is the top-all accuracy (always 100%)."""


def autocast(device: torch.device, dtype: torch.dtype = torch.float16):
    """Mixed precision on CUDA (the reference's float16; bfloat16 under fsdp), nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _forward_passes(loader: DataLoader, device: torch.device, lockstep: bool) -> int:
    """This process's batch count, or with ``lockstep`` the largest over the processes."""
    if not lockstep:
        return len(loader)
    count = torch.tensor([len(loader)], device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count.item())


def _blank_forward(model: nn.Module, device: torch.device) -> None:
    """One forward pass whose output is not used: this process's part of the other processes'
    parameter gathers."""
    embed = model.patch_embed
    model(torch.zeros(1, embed.proj.in_channels, *embed.img_size, device=device))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, sharded: bool,
             progress: bool = False, amp_dtype: torch.dtype = torch.float16) -> dict[str, float]:
    """``acc1`` and ``acc5`` (percent), ``loss`` (mean cross-entropy per image), ``count`` (images
    evaluated) and ``num_skipped`` (unreadable files left out). ``sharded``: the loader holds this
    process's share only, so the sums are reduced over the processes."""
    model.eval()
    lockstep = isinstance(model, FSDPModule)
    # loss sum, top-1 hits, top-k hits, images, skipped files
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    passes = _forward_passes(loader, device, lockstep)
    batches = iter(loader)
    bar = ProgressBar(passes, 0, enabled=progress)
    for _ in range(passes):
        images, targets, skipped = next(batches, (torch.empty(0), None, 0))
        sums[4] += skipped
        bar.advance()
        if images.numel() == 0:
            if lockstep:
                with autocast(device, amp_dtype):
                    _blank_forward(model, device)
            continue
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images)
        logits = logits.float()
        hits = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices.eq(targets[:, None])
        sums[0] += F.cross_entropy(logits, targets, reduction="sum").double()
        sums[1] += hits[:, 0].sum()
        sums[2] += hits.any(dim=1).sum()
        sums[3] += len(targets)
    bar.close()
    if sharded:
        distributed.all_reduce_sum(sums)
    loss, top1, topk, count, skipped = sums.tolist()
    if count == 0:
        raise RuntimeError("no validation image could be read; check the val/ folder of --data_path")
    return {"acc1": 100.0 * top1 / count, "acc5": 100.0 * topk / count, "loss": loss / count,
            "count": int(count), "num_skipped": int(skipped)}

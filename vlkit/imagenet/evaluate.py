"""Top-1 / top-5 accuracy and cross-entropy over the validation set, from exact counts.

Each process sums its own images' losses and hits; with a sharded loader (``--dist_eval``) the
sums are added across processes, so every image counts once whatever the world size (the
reference's padded ``DistributedSampler`` counted some twice and averaged per-batch losses).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from vlkit.engine.progress import ProgressBar
from vlkit.utils import distributed

TOP_K = 5
"""The second accuracy reported; with fewer classes it is the top-all accuracy (always 100%)."""


def autocast(device: torch.device):
    """The reference's mixed precision: float16 autocast on CUDA, nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, sharded: bool,
             progress: bool = False) -> dict[str, float]:
    """``acc1`` and ``acc5`` (percent), ``loss`` (mean cross-entropy per image), ``count`` (images
    evaluated) and ``num_skipped`` (unreadable files left out). ``sharded``: the loader holds this
    process's share only, so the sums are reduced over the processes."""
    model.eval()
    # loss sum, top-1 hits, top-k hits, images, skipped files
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    bar = ProgressBar(len(loader), 0, enabled=progress)
    for images, targets, skipped in loader:
        sums[4] += skipped
        bar.advance()
        if images.numel() == 0:
            continue
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device):
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

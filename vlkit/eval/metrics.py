"""Exact metric accumulation across batches and processes, and the record of an evaluation."""
from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from vlkit.utils import distributed

HASH_CHUNK = 1 << 20


class SumMeter:
    """Named float64 sums over batches, reduced across processes once at the end.

    Every rank must ``add`` the same keys before ``reduce`` (keys are sorted there); add a zero for a
    key that a rank did not see. Accuracy is then ``correct / total`` of summed counts: exact,
    however the samples were split over batches and ranks.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, key: str, value: torch.Tensor | float) -> None:
        value = torch.as_tensor(value, dtype=torch.float64, device=self.device).detach()
        self.sums[key] = self.sums.get(key, 0) + value

    def reduce(self) -> dict[str, float]:
        """Every sum, added over all ranks (a collective when distributed)."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        stacked = distributed.all_reduce_sum(torch.stack([self.sums[key] for key in keys]))
        return {key: float(value) for key, value in zip(keys, stacked.tolist())}


def ratio(sums: dict[str, float], numerator: str, denominator: str) -> float:
    """``sums[numerator] / sums[denominator]``, 0 when the denominator is 0."""
    total = sums.get(denominator, 0.0)
    return sums.get(numerator, 0.0) / total if total else 0.0


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def evaluation_record(
    cfg: Any, task: str, split: str, metrics: dict[str, float], extra: dict[str, Any] | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """What ``metrics.json`` of an evaluation holds: task, split, checkpoint (path and SHA-256; by
    default ``cfg.load_path``), image size, any task-specific description (e.g. the retrieval
    ``protocol``) and the numbers."""
    checkpoint = cfg.load_path if checkpoint is None else checkpoint
    present = bool(checkpoint) and os.path.isfile(checkpoint)
    return {
        "task": task,
        "split": split,
        **(extra or {}),
        "checkpoint": os.path.abspath(checkpoint) if present else None,
        "checkpoint_sha256": file_sha256(checkpoint) if present else None,
        "image_size": cfg.image_size,
        "metrics": metrics,
    }

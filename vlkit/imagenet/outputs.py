"""What a run writes into ``--output_dir`` (main process only; nothing when it is empty):

* ``log.txt``: one JSON line per epoch, the reference's keys (``train_lr``, ``train_loss``,
  ``test_loss``, ``test_acc1``, ``test_acc5``, ``epoch``, ``n_parameters``) plus the image counts;
* ``metrics.jsonl``: ``train`` records every few iterations, a ``val`` record per epoch, an
  ``eval`` record for ``--eval`` (vlkit's engine format, read by ``engine.logging.read_metrics``);
* ``plots/curves.png``: training loss and LR, validation top-1, top-5 and loss against the step;
* ``checkpoint-last.pth`` every epoch and ``checkpoint-best.pth`` when top-1 improves, written
  atomically; TensorBoard events in ``--log_dir`` when tensorboard is installed.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

import vlkit
from vlkit.utils.atomic import atomic_torch_save
from vlkit.engine.logging import plot_curves

log = logging.getLogger(__name__)

LAST, BEST = "checkpoint-last.pth", "checkpoint-best.pth"
PLOT = "plots/curves.png"


def _tensorboard(log_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir)


class RunOutputs:
    """The files above; every method is a no-op on other ranks or without ``--output_dir``."""

    def __init__(self, output_dir: str, log_dir: str, enabled: bool):
        self.dir = Path(output_dir) if output_dir and enabled else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        self._tensorboard = _tensorboard(log_dir) if log_dir and enabled else None

    def record(self, record: dict[str, Any]) -> None:
        """Append to ``metrics.jsonl`` and mirror the numbers to TensorBoard."""
        if self._tensorboard is not None:
            for name, value in record.items():
                if "/" in name and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(name, value, record["step"])
        self._append("metrics.jsonl", record)

    def epoch_log(self, stats: dict[str, Any]) -> None:
        """Append one line to ``log.txt``."""
        self._append("log.txt", stats)
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def _append(self, name: str, record: dict[str, Any]) -> None:
        if self.dir is not None:
            with open(self.dir / name, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def plot(self) -> Path | None:
        """Redraw ``plots/curves.png`` from ``metrics.jsonl``."""
        if self.dir is None or not (self.dir / "metrics.jsonl").exists():
            return None
        return plot_curves(self.dir / "metrics.jsonl", self.dir / PLOT)

    def save(self, name: str, checkpoint: dict[str, Any]) -> Path | None:
        """Write ``checkpoint`` to ``output_dir/name`` atomically."""
        if self.dir is None:
            return None
        return atomic_torch_save(checkpoint, self.dir / name)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def training_checkpoint(model_state: dict[str, Any], optimizer_state: dict[str, Any],
                        scaler: torch.amp.GradScaler, epoch: int, args: argparse.Namespace,
                        max_accuracy: float, test_stats: dict[str, float]) -> dict[str, Any]:
    """The reference's checkpoint keys (``model``, ``optimizer``: the whole model's state dicts,
    ``sharding.full_state``; ``epoch``, ``scaler``, ``args``, here a plain dict so the file loads
    with ``weights_only``) plus the best top-1 so far and this epoch's evaluation."""
    return {
        "model": model_state,
        "optimizer": optimizer_state,
        "epoch": epoch,
        "scaler": scaler.state_dict(),
        "args": vars(args).copy(),
        "max_accuracy": max_accuracy,
        "test_stats": dict(test_stats),
        "vlkit_version": vlkit.__version__,
    }

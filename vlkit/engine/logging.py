"""Run folders, interval metrics, ``metrics.jsonl`` / TensorBoard output and loss-curve plots."""
from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from vlkit.utils import distributed

PLOT_FILE = "plots/loss_curves.png"


def run_name(cfg: Any) -> str:
    """``cfg.run_name``, else the reference's ``{exp_name}_seed{seed}_from_{load_path stem}``."""
    if cfg.run_name:
        return cfg.run_name
    load_stem = os.path.splitext(os.path.basename(cfg.load_path))[0]
    return f"{cfg.exp_name}_seed{cfg.seed}_from_{load_stem}"


def create_version_dir(log_dir: str | os.PathLike, name: str) -> Path:
    """Create and return ``log_dir/name/version_K`` with K the next free integer."""
    parent = Path(log_dir) / name
    parent.mkdir(parents=True, exist_ok=True)
    suffixes = [p.name[len("version_"):] for p in parent.glob("version_*")]
    version = max((int(s) for s in suffixes if s.isdigit()), default=-1) + 1
    while True:
        try:
            (parent / f"version_{version}").mkdir()
            return parent / f"version_{version}"
        except FileExistsError:
            version += 1


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class IntervalMeter:
    """Accumulates one logging interval: loss terms per micro-batch, samples, data-wait time."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.samples = 0
        self.steps = 0
        self.data_wait_s = 0.0
        self.started = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], samples: int, data_wait_s: float) -> None:
        for name, value in terms.items():
            value = value.detach().float() if torch.is_tensor(value) else torch.tensor(float(value))
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] += 1
        self.samples += samples
        self.data_wait_s += data_wait_s

    def mark_step(self) -> None:
        """Count one optimizer step (for ``step_time_s``)."""
        self.steps += 1

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (validation, checkpointing) out of the interval's wall time."""
        self.started += seconds

    def summarize(self) -> dict[str, float]:
        """Averages over the interval and all ranks (a collective: every rank must call it)."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        local = {name: (total.item(), self.counts[name]) for name, total in self.sums.items()}
        merged: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        samples = 0
        for rank_terms, rank_samples in distributed.all_gather_object((local, self.samples)):
            samples += rank_samples
            for name, (total, count) in rank_terms.items():
                merged[name][0] += total
                merged[name][1] += count
        summary = {f"train/{name}": total / count for name, (total, count) in sorted(merged.items())}
        summary["samples_per_s"] = samples / elapsed
        summary["data_wait_frac"] = min(1.0, self.data_wait_s / elapsed)
        if self.steps:
            summary["step_time_s"] = elapsed / self.steps
        return summary


class MetricsLogger:
    """Appends records to ``metrics.jsonl`` and mirrors the numbers of train / val / test records
    to TensorBoard when it is installed.

    Only the main process writes; on other ranks every method does nothing.
    """

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._file = open(self.path, "a") if enabled else None
        self._tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tensorboard = SummaryWriter(str(run_dir))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tensorboard is not None and record.get("event") in ("train", "val", "test"):
            for name, value in record.items():
                if name not in ("event", "step") and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(name, value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plot_curves(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> Path | None:
    """One panel per training loss term and per validation metric, against the optimizer step.

    Returns the image path, or None when the file holds nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in read_metrics(metrics_path):
        if record.get("event") not in ("train", "val"):
            continue
        for name, value in record.items():
            if name.startswith(("train/", "val/")) and isinstance(value, (int, float)):
                steps, values = series.setdefault(name, ([], []))
                steps.append(record["step"])
                values.append(value)
    if not series:
        return None
    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for axis, (name, (steps, values)) in zip(axes.flat, sorted(series.items())):
        axis.plot(steps, values, marker="o" if name.startswith("val/") else None, markersize=3)
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(series):]:
        axis.set_visible(False)
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
    return out_path

"""What the trainer does with a non-finite loss (``nan_policy``, ``max_consecutive_nan``).

With ``finite_check=step`` the check is a collective taken before each backward pass, so every
rank decides the same way (``finite_check=interval`` defers it and can only stop the run).
``stop`` ends the run at once; ``skip`` drops the whole optimizer step the batch belongs to (no
backward for it, no optimizer, schedule or loss-scaler step; the gradients accumulated so far are
discarded) and goes on, until ``max_consecutive_nan`` steps in a row were skipped. Either way the
sample ids of every rank's batch are appended to ``run_dir/nan_batches.jsonl``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlkit.utils import distributed

POLICIES = ("stop", "skip")
NAN_BATCHES_FILE = "nan_batches.jsonl"


def _as_float(value: Any) -> float:
    return value.detach().float().item() if torch.is_tensor(value) else float(value)


def _scalar_terms(outputs: dict) -> dict[str, float]:
    return {name: _as_float(value) for name, value in outputs.items()
            if (torch.is_tensor(value) and value.numel() == 1) or isinstance(value, (int, float))}


def finite_check_mode(cfg: Any, device: torch.device) -> str:
    """``step`` or ``interval`` for ``cfg.finite_check`` (``auto``: interval on CUDA, step elsewhere).
    ``nan_policy=skip`` decides at every step, so it needs ``step``."""
    mode = cfg.finite_check if cfg.finite_check != "auto" else ("interval" if device.type == "cuda" else "step")
    if cfg.nan_policy == "skip" and mode == "interval":
        if cfg.finite_check == "interval":
            raise ValueError("nan_policy=skip decides at every step whether to drop it: set finite_check=step "
                             "(or auto), or use nan_policy=stop with finite_check=interval")
        return "step"
    return mode


class NanGuard:
    """Applies ``cfg.nan_policy`` to each micro-batch's loss; counts skipped steps."""

    def __init__(self, cfg: Any, run_dir: Path):
        if cfg.nan_policy not in POLICIES:
            raise ValueError(f"nan_policy={cfg.nan_policy!r} is not one of {list(POLICIES)}")
        if cfg.max_consecutive_nan < 1:
            raise ValueError(f"max_consecutive_nan={cfg.max_consecutive_nan} must be >= 1")
        self.policy, self.limit = cfg.nan_policy, cfg.max_consecutive_nan
        self.record_file = run_dir / NAN_BATCHES_FILE
        self.consecutive = 0
        self.step_poisoned = False

    def loss_is_finite(self, loss: torch.Tensor) -> bool:
        """Whether every rank's loss is finite (a collective); False marks the step as poisoned."""
        local_ok = torch.isfinite(loss.detach()).all().float().reshape(1)
        finite = distributed.all_reduce_min(local_ok).item() == 1
        self.step_poisoned |= not finite
        return finite

    def record(self, where: dict[str, Any], outputs: dict, batch: dict) -> dict[str, Any]:
        """Append every rank's sample ids and loss terms for the bad batch to ``nan_batches.jsonl``
        (a collective); returns the record."""
        indices = batch.get("raw_index")
        ids = indices.tolist() if torch.is_tensor(indices) else None
        ranks = distributed.all_gather_object({"sample_ids": ids, "terms": _scalar_terms(outputs)})
        record = {**where, "policy": self.policy, "ranks": ranks}
        if distributed.is_main():
            with self.record_file.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        return record

    def step_done(self, skipped: bool) -> None:
        """Count a finished optimizer step; raise after ``max_consecutive_nan`` skipped in a row."""
        self.step_poisoned = False
        self.consecutive = self.consecutive + 1 if skipped else 0
        if self.consecutive >= self.limit:
            raise FloatingPointError(
                f"{self.consecutive} optimizer steps in a row had a non-finite loss and were skipped "
                f"(max_consecutive_nan={self.limit}); their batches are listed in {self.record_file}. "
                "Lower learning_rate, set gradient_clip_val, use precision=bf16 or inspect those samples"
            )

"""Helpers for the tests that run training end to end and resume it."""
import pytest

from vlkit.engine.logging import read_metrics


def train_losses(run_dir):
    """{step: logged training loss} of a run folder."""
    return {r["step"]: r["train/loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"}


def crash_at_training_step(monkeypatch, task_class, call: int):
    """Make ``task_class.training_step`` raise "simulated crash" on its ``call``-th call (counting
    from this one); returns the original method, to put back for the resumed run."""
    original = task_class.training_step
    calls = {"count": 0}

    def crash(self, model, batch):
        calls["count"] += 1
        if calls["count"] == call:
            raise RuntimeError("simulated crash")
        return original(self, model, batch)

    monkeypatch.setattr(task_class, "training_step", crash)
    return original


def crash_and_resume(run, log_root, monkeypatch, task_class, crash_call: int, *words):
    """Three runs of ``run(log_dir, *words)``: uninterrupted, crashed at the ``crash_call``-th
    training step, and resumed from the crashed run's ``last.ckpt``; returns their run folders."""
    whole = run(log_root / "whole", *words)
    original_step = crash_at_training_step(monkeypatch, task_class, crash_call)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(log_root / "crashed", *words)
    monkeypatch.setattr(task_class, "training_step", original_step)
    crashed = next((log_root / "crashed").glob("*/version_0"))
    resumed = run(log_root / "resumed", *words, f"resume_from={crashed / 'checkpoints' / 'last.ckpt'}")
    return whole, crashed, resumed

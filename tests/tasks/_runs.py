"""Helpers for the tests that run training end to end and resume it."""
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

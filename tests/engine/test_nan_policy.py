"""nan_policy=skip drops the poisoned step (weights, optimizer and loss scaler untouched), counts
it, records the batch and goes on; too many in a row stop the run; nan_policy=stop writes the
batch's ids and, when asked, a debug checkpoint."""
import copy
import json

import pytest
import torch

from _engine_toy import ToyTask, toy_config
from vlkit.engine import Trainer
from vlkit.engine.checkpoint import load_checkpoint
from vlkit.engine.logging import read_metrics


class NanTask(ToyTask):
    """NaN loss on the training calls in ``nan_calls``; snapshots the model, optimizer and
    scaler state at the start of every call."""

    def __init__(self, cfg, nan_calls):
        super().__init__(cfg, dropout=0.0)
        self.nan_calls, self.snapshots, self.trainer = set(nan_calls), {}, None

    def training_step(self, model, batch):
        self.snapshots[self.training_calls + 1] = {
            "weights": copy.deepcopy(model.state_dict()),
            "adam_steps": [s["step"].item() for s in self.trainer.optimizer.state.values()],
            "scale": self.trainer.scaler.get_scale() if self.trainer.scaler is not None else None,
        }
        outputs = super().training_step(model, batch)
        if self.training_calls in self.nan_calls:
            outputs["loss"] = outputs["loss"] * float("nan")
        return outputs


def run(tmp_path, nan_calls, **overrides):
    cfg = toy_config(tmp_path, max_steps=5, val_check_interval=100, optim_type="adamw", **overrides)
    task = NanTask(cfg, nan_calls)
    task.trainer = Trainer(cfg, task)
    return task, task.trainer


@pytest.mark.parametrize("precision", ["32", "16-mixed"])
def test_skip_leaves_the_step_out_and_goes_on(tmp_path, precision):
    task, trainer = run(tmp_path, {3}, nan_policy="skip", precision=precision)
    result = trainer.fit()
    before, after, later = (task.snapshots[call] for call in (3, 4, 5))
    for name, value in before["weights"].items():
        assert torch.equal(after["weights"][name], value), name
    assert after["adam_steps"] == before["adam_steps"] == [2.0] * 4 and after["scale"] == before["scale"]
    assert later["adam_steps"] == [3.0] * 4
    assert any(not torch.equal(later["weights"][k], v) for k, v in after["weights"].items())
    assert result["global_step"] == 5 and task.training_calls == 6  # the skipped step is not counted
    assert trainer.state.num_nan_skips == 1
    run_dir = tmp_path / "toy" / "version_0"
    records = read_metrics(run_dir / "metrics.jsonl")
    (skip,) = [r for r in records if r["event"] == "nan_skip"]
    assert (skip["step"], skip["batch"]) == (2, 2) and len(skip["sample_ids"][0]) == 8
    assert [r["num_nan_skips"] for r in records if r["event"] == "train"] == [0, 0, 1, 1, 1]
    assert all(r["train/grad_norm"] > 0 for r in records if r["event"] == "train")
    (line,) = (run_dir / "nan_batches.jsonl").read_text().splitlines()
    assert json.loads(line)["ranks"][0]["sample_ids"] == skip["sample_ids"][0]
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["vlkit"]["num_nan_skips"] == 1


def test_skip_stops_after_max_consecutive_nan(tmp_path):
    _, trainer = run(tmp_path, {2, 3, 4}, nan_policy="skip", max_consecutive_nan=3)
    with pytest.raises(FloatingPointError, match="3 optimizer steps in a row.*max_consecutive_nan=3"):
        trainer.fit()


def test_stop_records_the_batch_and_writes_a_debug_checkpoint(tmp_path):
    task, trainer = run(tmp_path, {3}, nan_debug_checkpoint=True)
    with pytest.raises(FloatingPointError, match="nan_debug.ckpt"):
        trainer.fit()
    run_dir = tmp_path / "toy" / "version_0"
    record = json.loads((run_dir / "nan_batches.jsonl").read_text())
    assert record["policy"] == "stop" and record["step"] == 2 and len(record["ranks"][0]["sample_ids"]) == 8
    debug = load_checkpoint(run_dir / "checkpoints" / "nan_debug.ckpt")
    assert debug["global_step"] == 2
    for name, value in task.snapshots[3]["weights"].items():
        assert torch.equal(debug["state_dict"][name], value)

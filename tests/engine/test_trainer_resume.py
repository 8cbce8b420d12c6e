"""A run that crashes and resumes from last.ckpt continues the loss sequence bit for bit."""
import pytest
import torch

from _engine_toy import ToyTask, toy_config
from vlkit.engine import Trainer
from vlkit.engine.checkpoint import load_checkpoint
from vlkit.engine.logging import read_metrics

STEPS = 12  # 64 samples / 8 per batch = 8 batches per epoch; 2 batches per step; 3 epochs
CRASH_STEP = 7  # last.ckpt then holds step 6, in the middle of epoch 1


class CrashingToyTask(ToyTask):
    """Fails in the second micro-batch of optimizer step ``CRASH_STEP``."""

    def training_step(self, model, batch):
        if self.training_calls + 1 == 2 * CRASH_STEP:
            raise RuntimeError("simulated crash")
        return super().training_step(model, batch)


def train_losses(run_dir):
    records = read_metrics(run_dir / "metrics.jsonl")
    return {r["step"]: r["train/loss"] for r in records if r["event"] == "train"}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_run_matches_the_uninterrupted_one_exactly(tmp_path, num_workers):
    def config(name, **overrides):
        return toy_config(tmp_path, run_name=name, num_workers=num_workers, batch_size=16, max_epoch=3,
                          val_check_interval=3, **overrides)

    straight_cfg = config("straight")
    straight = Trainer(straight_cfg, ToyTask(straight_cfg)).fit()
    crashed_cfg = config("crashed")
    crashed = Trainer(crashed_cfg, CrashingToyTask(crashed_cfg))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    checkpoint = crashed.run_dir / "checkpoints" / "last.ckpt"
    assert load_checkpoint(checkpoint)["global_step"] == CRASH_STEP - 1
    resumed_cfg = config("resumed", resume_from=str(checkpoint))
    resumed = Trainer(resumed_cfg, ToyTask(resumed_cfg)).fit()

    expected = train_losses(tmp_path / "straight/version_0")
    assert sorted(expected) == list(range(1, STEPS + 1))
    assert train_losses(crashed.run_dir) == {s: expected[s] for s in range(1, CRASH_STEP)}
    resumed_losses = train_losses(tmp_path / "resumed/version_0")
    assert resumed_losses == {s: expected[s] for s in range(CRASH_STEP, STEPS + 1)}
    assert resumed["global_step"] == STEPS and resumed["val"] == straight["val"]
    final_straight = load_checkpoint(straight["last_checkpoint"])
    final_resumed = load_checkpoint(resumed["last_checkpoint"])
    for name, value in final_straight["state_dict"].items():
        assert torch.equal(value, final_resumed["state_dict"][name]), name
    assert final_resumed["vlkit"]["num_skipped_images"] == final_straight["vlkit"]["num_skipped_images"]

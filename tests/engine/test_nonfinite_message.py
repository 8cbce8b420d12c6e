"""The non-finite-loss stop: advice that fits when it happened, and a checkpoint named only when one exists."""
import pytest

from _engine_toy import ToyTask, toy_config
from vlkit.engine.trainer import Trainer


class NanAtCallTask(ToyTask):
    nan_call = 1

    def training_step(self, model, batch):
        outputs = super().training_step(model, batch)
        if self.training_calls == self.nan_call:
            outputs["loss"] = outputs["loss"] * float("nan")
        return outputs


def test_non_finite_from_the_first_step_points_at_weights_and_data(tmp_path):
    cfg = toy_config(tmp_path, val_check_interval=1)
    with pytest.raises(FloatingPointError) as error:
        Trainer(cfg, NanAtCallTask(cfg)).fit()
    message = str(error.value)
    assert "global step 0" in message
    assert "non-finite from the first step: check the loaded weights (load_path, pretrain_path) and the data" in message
    assert "no checkpoint was written before it" in message
    assert "last.ckpt" not in message and "learning_rate" not in message


def test_later_non_finite_names_the_existing_checkpoint(tmp_path):
    cfg = toy_config(tmp_path, val_check_interval=1)
    task = NanAtCallTask(cfg)
    task.nan_call = 3
    with pytest.raises(FloatingPointError) as error:
        Trainer(cfg, task).fit()
    message = str(error.value)
    last = tmp_path / "toy/version_0/checkpoints/last.ckpt"
    assert last.is_file() and f"{last} is the last good state" in message
    assert "lower learning_rate" in message and "first step" not in message


def test_interval_checks_stop_at_the_next_log_with_the_same_advice(tmp_path):
    cfg = toy_config(tmp_path, val_check_interval=10, finite_check="interval", log_every_n_steps=2)
    with pytest.raises(FloatingPointError) as error:
        Trainer(cfg, NanAtCallTask(cfg)).fit()
    message = str(error.value)
    assert "in the steps up to global step 2" in message and "finite_check=interval" in message
    assert "non-finite from the first step" in message and "no checkpoint was written before it" in message

"""Trainer.fit / test end to end on the toy task: learning, run artifacts, precision, errors."""
import json
import re

import pytest
import torch
from omegaconf import OmegaConf

from _engine_toy import ToyModel, ToyTask, toy_config
from vlkit.engine import Trainer
from vlkit.engine.checkpoint import load_checkpoint
from vlkit.engine.logging import read_metrics, run_name
from vlkit.engine.trainer import accumulation_steps, autocast_dtype


def events(run_dir, kind):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == kind]


def test_fit_learns_and_writes_every_run_artifact(tmp_path):
    cfg = toy_config(tmp_path, max_epoch=4, val_check_interval=0.5, progress_bar=True)
    trainer = Trainer(cfg, ToyTask(cfg))
    result = trainer.fit()
    run_dir = trainer.run_dir
    assert run_dir == tmp_path / "toy" / "version_0"
    assert result["global_step"] == 32  # 64 samples / 8 per batch x 4 epochs

    train = events(run_dir, "train")
    assert [r["step"] for r in train] == list(range(1, 33))
    first, last = train[0], train[-1]
    assert {"lr", "train/loss", "train/accuracy", "samples_per_s", "data_wait_frac",
            "peak_memory_mb", "num_skipped_images"} <= set(first)
    losses = [r["train/loss"] for r in train]
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4])
    assert first["lr"] == pytest.approx(0.01) and last["lr"] < first["lr"]
    assert first["samples_per_s"] > 0 and 0 <= first["data_wait_frac"] <= 1 and first["peak_memory_mb"] > 0
    assert last["num_skipped_images"] == 4 * 7  # indices 0, 10, ..., 60 in each of 4 epochs

    val = events(run_dir, "val")
    assert [r["step"] for r in val] == [4, 8, 12, 16, 20, 24, 28, 32]  # twice per epoch
    assert all(r["val/count"] == 30 for r in val)
    assert val[-1]["val/accuracy"] >= 0.9 and result["val"]["the_metric"] == val[-1]["val/the_metric"]

    saved_cfg = OmegaConf.load(run_dir / "config.yaml")
    assert saved_cfg.per_gpu_batchsize == 8 and saved_cfg.run_name == "toy"
    assert (run_dir / "plots" / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(run_dir.glob("events.out.tfevents.*"))

    best_metric = max(r["val/the_metric"] for r in val)
    best_step = next(r["step"] for r in val if r["val/the_metric"] == best_metric)
    best = load_checkpoint(result["best_checkpoint"])
    last_ckpt = load_checkpoint(result["last_checkpoint"])
    assert result["best_metric"] == best_metric == best["vlkit"]["best_metric"]
    assert best["global_step"] == best_step and last_ckpt["global_step"] == 32
    assert best["hyper_parameters"]["config"]["per_gpu_batchsize"] == 8
    assert len(last_ckpt["optimizer_states"]) == len(last_ckpt["lr_schedulers"]) == 1
    assert last_ckpt["vlkit"]["sampler"]["epoch"] == 3 and last_ckpt["vlkit"]["version"]
    ToyModel(0.1).load_state_dict(last_ckpt["state_dict"])  # plain keys, no "module." prefix

    test_metrics = trainer.test()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["metrics"] == test_metrics and record["split"] == "test"
    assert record["image_size"] == cfg.image_size and record["checkpoint"] is None
    val_record = json.loads((run_dir / "evaluations" / "val_step0000032.json").read_text())
    assert val_record["split"] == "val" and val_record["metrics"] == result["val"]
    assert len(val_record["checkpoint_sha256"]) == 64 and val_record["checkpoint"].endswith("last.ckpt")
    assert test_metrics["count"] == 30 and test_metrics["the_metric"] >= 0.8


@pytest.mark.parametrize("precision, dtype, uses_scaler", [
    ("bf16", torch.bfloat16, False), ("16-mixed", torch.float16, True),
])
def test_mixed_precision_runs_on_cpu(tmp_path, precision, dtype, uses_scaler):
    cfg = toy_config(tmp_path, precision=precision, max_steps=3, val_check_interval=3)
    task = ToyTask(cfg)
    result = Trainer(cfg, task).fit()
    assert task.autocast_dtypes == {dtype}
    losses = [r["train/loss"] for r in events(tmp_path / "toy/version_0", "train")]
    assert len(losses) == 3 and torch.isfinite(torch.tensor(losses)).all()
    scaler_state = load_checkpoint(result["last_checkpoint"])["vlkit"]["scaler"]
    assert (scaler_state is not None) == uses_scaler


class NanAtThirdCallTask(ToyTask):
    def training_step(self, model, batch):
        outputs = super().training_step(model, batch)
        if self.training_calls == 3:
            outputs["loss"] = outputs["loss"] * float("nan")
        return {**outputs, "itm_loss": torch.tensor(0.25)}


def test_non_finite_loss_stops_with_step_epoch_and_terms(tmp_path):
    cfg = toy_config(tmp_path, val_check_interval=1)
    with pytest.raises(FloatingPointError) as error:
        Trainer(cfg, NanAtThirdCallTask(cfg)).fit()
    message = str(error.value)
    for part in ("global step 2", "epoch 0", "loss=nan", "itm_loss=0.25", "accuracy=", "sample indices"):
        assert part in message
    last = load_checkpoint(tmp_path / "toy/version_0/checkpoints/last.ckpt")
    assert last["global_step"] == 2
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())


def test_fast_dev_run_runs_one_batch_of_each_and_saves_no_checkpoint(tmp_path):
    cfg = toy_config(tmp_path, fast_dev_run=True, max_epoch=100)
    task = ToyTask(cfg)
    trainer = Trainer(cfg, task)
    result = trainer.fit()
    assert task.training_calls == 1 and result["global_step"] == 1
    assert result["val"]["count"] == 8  # one validation batch
    assert result["last_checkpoint"] is None and not (trainer.run_dir / "checkpoints").exists()


def test_without_a_validation_set_checkpoints_are_still_written(tmp_path):
    cfg = toy_config(tmp_path, max_steps=5, val_check_interval=2)
    result = Trainer(cfg, ToyTask(cfg, val_size=0)).fit()
    assert result["val"] is None and result["best_checkpoint"] is None
    assert load_checkpoint(result["last_checkpoint"])["global_step"] == 5


def test_batch_size_errors_and_accumulation_fallback(tmp_path):
    with pytest.raises(ValueError, match="set e.g. per_gpu_batchsize=32"):
        Trainer(toy_config(tmp_path, per_gpu_batchsize=0), ToyTask(None))
    assert accumulation_steps(4096, 32, 8) == 16
    with pytest.warns(UserWarning, match="without gradient accumulation"):
        assert accumulation_steps(4, 8, 1) == 1
    with pytest.raises(ValueError, match="precision='fp8'"):
        autocast_dtype("fp8")
    with pytest.raises(ValueError, match="val_check_interval=1.5"):
        Trainer(toy_config(tmp_path, val_check_interval=1.5), ToyTask(None))


def test_resume_from_a_missing_file_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "last.ckpt"
    cfg = toy_config(tmp_path, resume_from=str(missing))
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        Trainer(cfg, ToyTask(cfg)).fit()


def test_run_folders_take_the_next_version_and_the_reference_name(tmp_path):
    cfg = toy_config(tmp_path)
    assert [Trainer(cfg, ToyTask(cfg)).run_dir.name for _ in range(2)] == ["version_0", "version_1"]
    reference = toy_config(tmp_path, run_name="", exp_name="vlc", seed=3, load_path="/w/vlc_pretrain.ckpt")
    assert run_name(reference) == "vlc_seed3_from_vlc_pretrain"


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """batch_size 8 as 2 x 4 accumulated gives the same SGD update as one batch of 8 (mean loss)."""
    results = {}
    for per_gpu in (4, 8):
        cfg = toy_config(tmp_path, run_name=f"per_gpu_{per_gpu}", per_gpu_batchsize=per_gpu,
                         max_steps=1, val_check_interval=1, optim_type="sgd", learning_rate=0.5)
        task = ToyTask(cfg, dropout=0.0)
        result = Trainer(cfg, task).fit()
        results[per_gpu] = (task.training_calls, load_checkpoint(result["last_checkpoint"]),
                            events(tmp_path / f"per_gpu_{per_gpu}/version_0", "train")[0]["train/loss"])
    assert results[4][0] == 2 and results[8][0] == 1
    torch.manual_seed(0)
    initial = ToyModel(0.0).state_dict()
    for name, value in results[8][1]["state_dict"].items():
        assert not torch.allclose(value, initial[name])
        torch.testing.assert_close(results[4][1]["state_dict"][name], value, rtol=1e-5, atol=1e-6)
    assert results[4][2] == pytest.approx(results[8][2], rel=1e-6)


def test_gradient_clipping_bounds_the_update(tmp_path):
    clip = 1e-3
    cfg = toy_config(tmp_path, max_steps=1, val_check_interval=1, optim_type="sgd", learning_rate=1.0,
                     weight_decay=0.0, gradient_clip_val=clip)
    result = Trainer(cfg, ToyTask(cfg, dropout=0.0)).fit()
    torch.manual_seed(0)
    initial = ToyModel(0.0).state_dict()
    after = load_checkpoint(result["last_checkpoint"])["state_dict"]
    update = torch.cat([(after[name] - initial[name]).flatten() for name in initial])
    assert update.norm().item() == pytest.approx(clip, rel=1e-3)

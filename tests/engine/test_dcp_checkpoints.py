"""Sharded checkpoints (strategy=fsdp): written by 2 gloo processes and resumed by 1, written by 1
and resumed by 2, both continuing the uninterrupted loss sequence; consolidated into one file that
a ddp run resumes from; step checkpoints pruned to keep_last_k; resume_from=auto."""
import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from _engine_toy import ToyTask, toy_config
from vlkit.cli import main as vlkit_main
from vlkit.engine import Trainer
from vlkit.engine.checkpoint import load_checkpoint
from vlkit.engine.dcp_checkpoint import is_sharded_checkpoint, read_trainer_state
from vlkit.engine.logging import read_metrics
from vlkit.utils.distributed import launch_local

HERE = Path(__file__).parent
REPO = HERE.parent.parent
COMMON = dict(batch_size=16, max_steps=4, max_epoch=10, val_check_interval=100, optim_type="adamw",
              learning_rate=0.05, strategy="fsdp", checkpoint_every_n_steps=2, keep_last_k=0)


def losses(run_dir):
    return {r["step"]: r["train/loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"}


def fit(cfg):
    return Trainer(cfg, ToyTask(cfg, dropout=0.0)).fit()


def test_sharded_checkpoints_resume_at_another_world_size_and_consolidate(tmp_path, monkeypatch):
    single = toy_config(tmp_path, run_name="single", per_gpu_batchsize=16, **COMMON)
    fit(single)
    single_dir = tmp_path / "single" / "version_0"
    single_step2 = single_dir / "checkpoints" / "step_0000002"
    assert is_sharded_checkpoint(single_step2) and read_trainer_state(single_step2)["vlkit"]["world_size"] == 1

    runs = [{"toy": OmegaConf.to_container(toy_config(tmp_path, run_name=name, per_gpu_batchsize=8, **COMMON,
                                                      resume_from=resume))}
            for name, resume in (("two", None), ("one_to_two", str(single_step2)))]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(HERE)]))
    assert launch_local(2, [str(HERE / "runs_worker.py"), str(tmp_path / "runs.json")]) == 0

    two_dir = tmp_path / "two" / "version_0"
    expected = losses(single_dir)
    assert sorted(expected) == [1, 2, 3, 4]
    assert losses(two_dir) == pytest.approx(expected, rel=1e-5)
    assert read_trainer_state(two_dir / "checkpoints" / "step_0000002")["vlkit"]["world_size"] == 2
    assert sorted(p.name for p in (two_dir / "checkpoints").iterdir()) == ["best", "last", "step_0000002", "step_0000004"]
    assert losses(tmp_path / "one_to_two" / "version_0") == pytest.approx({3: expected[3], 4: expected[4]}, rel=1e-5)

    with pytest.warns(UserWarning, match="written by 2 processes"):
        fit(toy_config(tmp_path, run_name="two_to_one", per_gpu_batchsize=16, **COMMON,
                       resume_from=str(two_dir / "checkpoints" / "step_0000002")))
    assert losses(tmp_path / "two_to_one" / "version_0") == pytest.approx({3: expected[3], 4: expected[4]}, rel=1e-5)

    # one file from the 2-process shards: the 1-process weights; a ddp run resumes from it exactly
    for name, run in (("two", two_dir), ("single", single_dir)):
        assert vlkit_main(["checkpoint", "consolidate", str(run / "checkpoints" / "step_0000004"),
                           str(tmp_path / f"{name}.ckpt")]) == 0
    merged, reference = (load_checkpoint(tmp_path / f"{name}.ckpt") for name in ("two", "single"))
    assert merged["global_step"] == 4 and set(merged["state_dict"]) == set(reference["state_dict"])
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(merged["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    assert sorted(merged["optimizer_states"][0]["state"]) == [0, 1, 2, 3]  # index-keyed, as Optimizer.state_dict
    assert vlkit_main(["checkpoint", "consolidate", str(two_dir), str(tmp_path / "x.ckpt")]) == 2  # not one
    assert vlkit_main(["checkpoint", "consolidate", str(two_dir / "checkpoints" / "step_0000002"),
                       str(tmp_path / "two_step2.ckpt")]) == 0
    ddp = {**COMMON, "strategy": "ddp"}
    fit(toy_config(tmp_path, run_name="ddp_from_file", per_gpu_batchsize=16, **ddp,
                   resume_from=str(tmp_path / "two_step2.ckpt")))
    assert losses(tmp_path / "ddp_from_file" / "version_0") == pytest.approx({3: expected[3], 4: expected[4]}, rel=1e-5)

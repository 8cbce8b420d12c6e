"""Two gloo ranks (launched by launch_local) train exactly like one process with their joint batch."""
import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from _engine_toy import ToyTask, toy_config
from vlkit.engine import Trainer
from vlkit.engine.checkpoint import load_checkpoint
from vlkit.engine.logging import read_metrics
from vlkit.utils.distributed import launch_local

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def run_records(run_dir, event):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == event]


@pytest.mark.parametrize("compiled", [False, "model"])
def test_two_gloo_ranks_match_one_process_with_the_combined_batch(compiled, tmp_path, monkeypatch):
    # 2 optimizer steps of 16 samples: 2 ranks x 4 per batch x 2 accumulated micro-batches
    # (exercising no_sync), against 1 process x 16 per batch; also with the DDP-wrapped training
    # step compiled (graph capture through aot_eager)
    common = dict(batch_size=16, max_steps=2, val_check_interval=2, optim_type="sgd", learning_rate=0.5)
    ddp_cfg = toy_config(tmp_path, run_name="ddp", per_gpu_batchsize=4, compile=compiled,
                         compile_backend="aot_eager", **common)
    cfg_file = tmp_path / "ddp.json"
    cfg_file.write_text(json.dumps(OmegaConf.to_container(ddp_cfg)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(HERE)]))
    assert launch_local(2, [str(HERE / "ddp_toy_worker.py"), str(cfg_file)]) == 0

    single_cfg = toy_config(tmp_path, run_name="single", per_gpu_batchsize=16, **common)
    single = Trainer(single_cfg, ToyTask(single_cfg, dropout=0.0)).fit()

    ddp_dir = tmp_path / "ddp" / "version_0"
    assert run_records(ddp_dir, "setup")[0]["world_size"] == 2
    assert run_records(ddp_dir, "setup")[0]["accumulation"] == 2
    ddp_losses = [r["train/loss"] for r in run_records(ddp_dir, "train")]
    single_losses = [r["train/loss"] for r in run_records(tmp_path / "single/version_0", "train")]
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5)
    assert run_records(ddp_dir, "val")[-1]["val/count"] == 30  # each val sample once over 2 ranks

    ddp_ckpt = load_checkpoint(ddp_dir / "checkpoints" / "last.ckpt")
    single_ckpt = load_checkpoint(single["last_checkpoint"])
    assert ddp_ckpt["global_step"] == single_ckpt["global_step"] == 2
    for name, value in single_ckpt["state_dict"].items():
        torch.testing.assert_close(ddp_ckpt["state_dict"][name], value, rtol=1e-5, atol=1e-6)
    rank_states = ddp_ckpt["vlkit"]["rng_states"]
    assert len(rank_states) == 2 and not torch.equal(rank_states[0]["torch"], rank_states[1]["torch"])

"""Two gloo ranks (launched by launch_local) train exactly like one process with their joint batch,
and two torchrun invocations acting as two nodes (``--nnodes 2 --node-rank 0/1``, c10d rendezvous on
127.0.0.1, one process each) train exactly like that one node with two processes."""
import json
import os
import socket
import subprocess
import sys
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_two_nodes(config_file):
    """Two torchrun invocations, one process each, meeting at a c10d rendezvous as two nodes."""
    endpoint = f"127.0.0.1:{free_port()}"
    return [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1",
         "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id=vlkit-test",
         str(HERE / "ddp_toy_worker.py"), str(config_file)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ) for rank in (0, 1)]


def run_records(run_dir, event):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == event]


def test_two_gloo_ranks_match_one_process_with_the_combined_batch(tmp_path, monkeypatch):
    # 2 optimizer steps of 16 samples: 2 ranks x 4 per batch x 2 accumulated micro-batches
    # (exercising no_sync), against 1 process x 16 per batch. The one-node run compiles its
    # DDP-wrapped training step (graph capture through aot_eager); the two-node run is eager.
    common = dict(batch_size=16, max_steps=2, val_check_interval=2, optim_type="sgd", learning_rate=0.5)
    for name, compiled in (("ddp", "model"), ("two_nodes", False)):
        ddp_cfg = toy_config(tmp_path, run_name=name, per_gpu_batchsize=4, compile=compiled,
                             compile_backend="aot_eager", **common)
        (tmp_path / f"{name}.json").write_text(json.dumps(OmegaConf.to_container(ddp_cfg)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(HERE)]))
    nodes = start_two_nodes(tmp_path / "two_nodes.json")
    assert launch_local(2, [str(HERE / "ddp_toy_worker.py"), str(tmp_path / "ddp.json")]) == 0
    for node in nodes:
        assert node.wait(timeout=240) == 0, node.stderr.read().decode()[-3000:]

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

    nodes_dir = tmp_path / "two_nodes" / "version_0"
    assert run_records(nodes_dir, "setup")[0]["world_size"] == 2
    assert [r["train/loss"] for r in run_records(nodes_dir, "train")] == pytest.approx(ddp_losses, rel=1e-5)
    nodes_ckpt = load_checkpoint(nodes_dir / "checkpoints" / "last.ckpt")
    for name, value in ddp_ckpt["state_dict"].items():
        torch.testing.assert_close(nodes_ckpt["state_dict"][name], value, rtol=1e-5, atol=1e-6)
    assert run_records(ddp_dir, "train")[-1]["compile_graphs"] >= 1

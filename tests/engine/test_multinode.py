"""Two torchrun invocations on this machine acting as two nodes (``--nnodes 2 --node-rank 0/1``,
c10d rendezvous on 127.0.0.1, one process each) train exactly like one node with two processes."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from _engine_toy import toy_config
from vlkit.engine.checkpoint import load_checkpoint
from vlkit.engine.logging import read_metrics

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*launcher_args, config_file):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launcher_args,
                             str(HERE / "ddp_toy_worker.py"), str(config_file)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_two_nodes_match_one_node_with_two_processes(tmp_path):
    common = dict(batch_size=16, per_gpu_batchsize=4, max_steps=3, val_check_interval=3, optim_type="adamw",
                  learning_rate=0.05)
    files = {}
    for name in ("two_nodes", "one_node"):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(OmegaConf.to_container(toy_config(tmp_path, run_name=name, **common))))
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [torchrun("--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1", "--rdzv-backend=c10d",
                      f"--rdzv-endpoint={endpoint}", "--rdzv-id=vlkit-test", config_file=files["two_nodes"])
             for rank in (0, 1)]
    one_node = torchrun("--standalone", "--nproc-per-node=2", config_file=files["one_node"])
    for process in (*nodes, one_node):
        assert process.wait(timeout=240) == 0, process.stderr.read().decode()[-3000:]

    runs = {name: tmp_path / name / "version_0" for name in files}
    setups = {name: read_metrics(run / "metrics.jsonl")[0] for name, run in runs.items()}
    assert setups["two_nodes"]["world_size"] == setups["one_node"]["world_size"] == 2
    losses = {name: [r["train/loss"] for r in read_metrics(run / "metrics.jsonl") if r["event"] == "train"]
              for name, run in runs.items()}
    assert len(losses["one_node"]) == 3 and losses["two_nodes"] == pytest.approx(losses["one_node"], rel=1e-6)
    weights = {name: load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"] for name, run in runs.items()}
    for key, value in weights["one_node"].items():
        torch.testing.assert_close(weights["two_nodes"][key], value, rtol=1e-6, atol=1e-7)

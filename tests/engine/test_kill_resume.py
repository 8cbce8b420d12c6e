"""kill -9 while a step checkpoint is being written, then right after a seeded random step: torchrun
(--max-restarts 2) restarts the worker, ``resume_from=auto`` picks the newest complete checkpoint,
and the loss sequence from there on is the uninterrupted run's. Checkpoints written before a kill
stay intact; a half-written one is never visible or resumed from."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from _engine_toy import ToyTask, toy_config
from vlkit.engine import Trainer
from vlkit.engine.checkpoint import load_checkpoint
from vlkit.engine.logging import read_metrics
from vlkit.engine.step_checkpoints import checkpoint_step, find_latest_checkpoint

HERE = Path(__file__).parent
REPO = HERE.parent.parent
STEPS, EVERY = 18, 3
COMMON = dict(batch_size=8, per_gpu_batchsize=8, max_steps=STEPS, max_epoch=100, val_check_interval=100,
              optim_type="adamw", learning_rate=0.02, checkpoint_every_n_steps=EVERY, keep_last_k=2)


def records(run_dir, event):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == event]


def losses(run_dir):
    return {r["step"]: r["train/loss"] for r in records(run_dir, "train")}


def wait_for(condition, process, what):
    deadline = time.monotonic() + 180
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def launch(tmp_path, name, hold, pause_at):
    cfg = toy_config(tmp_path, run_name=name, resume_from="auto", **COMMON)
    folder = tmp_path / f"{name}_io"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(OmegaConf.to_container(cfg)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]), "HOLD_CHECKPOINT": hold,
           "PAUSE_AT_STEP": str(pause_at), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
               "--max-restarts=2", str(HERE / "kill_worker.py"), str(folder / "config.json")]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("whole")
    cfg = toy_config(tmp_path, run_name="whole", **COMMON)
    Trainer(cfg, ToyTask(cfg, dropout=0.0)).fit()
    expected = losses(tmp_path / "whole" / "version_0")
    assert sorted(expected) == list(range(1, STEPS + 1))
    return expected


def check_resumed(run_dir, expected):
    """The attempt in ``run_dir`` resumed from a step checkpoint and logged the uninterrupted losses
    from there on, up to where it stopped; returns the step it resumed at."""
    start = records(run_dir, "setup")[0]["step"]
    assert start > 0 and start % EVERY == 0
    logged = losses(run_dir)
    assert min(logged) == start + 1
    assert logged == pytest.approx({s: expected[s] for s in logged}, abs=1e-6)
    return start


def test_kill_9_while_writing_a_checkpoint_then_at_a_random_step_resumes_exactly(tmp_path, uninterrupted):
    kill_step = random.Random(21).choice([s for s in range(10, STEPS) if s % EVERY])  # between checkpoints
    process, io = launch(tmp_path, "killed", hold="step_0000009", pause_at=kill_step)
    runs = [tmp_path / "killed" / f"version_{k}" for k in range(3)]

    # attempt 0: killed while step 9 is being written; the newest complete checkpoint is step 6
    wait_for(lambda: (io / "hold").is_file(), process, "the held checkpoint write")
    assert find_latest_checkpoint(tmp_path / "killed").name == "step_0000006.ckpt"
    os.kill(int((io / "pid_0").read_text()), signal.SIGKILL)

    # attempt 1 (restarted by torchrun, resume_from=auto): killed right after a seeded random step
    wait_for(lambda: (io / "paused").is_file(), process, f"step {kill_step}")
    os.kill(int((io / "pid_1").read_text()), signal.SIGKILL)
    assert process.wait(timeout=120) == 0, process.stderr.read().decode()[-3000:]

    assert check_resumed(runs[1], uninterrupted) == 6 and max(losses(runs[1])) == kill_step
    assert check_resumed(runs[2], uninterrupted) == kill_step - kill_step % EVERY
    assert max(losses(runs[2])) == STEPS
    assert losses(runs[0]) == pytest.approx({s: uninterrupted[s] for s in losses(runs[0])}, abs=1e-6)
    held = runs[0] / "checkpoints"
    assert sorted(p.name for p in held.glob("step_*")) == ["step_0000003.ckpt", "step_0000006.ckpt"]
    assert len(list(held.glob(".step_0000009.ckpt.*.tmp"))) == 1  # the half-written file stayed hidden
    for path in [*held.glob("step_*"), *(runs[1] / "checkpoints").glob("step_*")]:  # intact after the kills
        assert load_checkpoint(path)["global_step"] == int(path.stem.removeprefix("step_"))


def test_auto_resume_never_picks_a_partial_sharded_checkpoint(tmp_path):
    cfg = toy_config(tmp_path, run_name="r", strategy="fsdp", **{**COMMON, "max_steps": 6})
    Trainer(cfg, ToyTask(cfg, dropout=0.0)).fit()
    checkpoints = tmp_path / "r" / "version_0" / "checkpoints"
    assert checkpoint_step(find_latest_checkpoint(tmp_path / "r")) == 6  # last, best or step_0000006
    for name in ("last", "best"):
        shutil.rmtree(checkpoints / name)
    (checkpoints / "step_0000006" / "trainer_state.pt").unlink()  # as if killed before rank 0 wrote it
    shutil.copytree(checkpoints / "step_0000003", checkpoints / ".step_0000009.partial")
    assert find_latest_checkpoint(tmp_path / "r").name == "step_0000003"
    resumed = toy_config(tmp_path, run_name="r", strategy="fsdp", resume_from="auto", **{**COMMON, "max_steps": 6})
    Trainer(resumed, ToyTask(resumed, dropout=0.0)).fit()
    assert records(tmp_path / "r" / "version_1", "setup")[0]["step"] == 3
    fresh = toy_config(tmp_path, run_name="new", resume_from="auto", **{**COMMON, "max_steps": 1})
    Trainer(fresh, ToyTask(fresh, dropout=0.0)).fit()
    assert records(tmp_path / "new" / "version_0", "setup")[0]["resumed_from"] is None

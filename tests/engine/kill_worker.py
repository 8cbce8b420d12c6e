"""A toy training run for the kill -9 test: ``python kill_worker.py CONFIG_JSON`` under torchrun.

The process writes its pid to ``pid_<attempt>`` beside the config and, so that the test's SIGKILL
lands exactly where it wants, waits to be killed: on attempt 0 with ``HOLD_CHECKPOINT=NAME`` just
before checkpoint ``NAME`` is published (``hold`` appears), on attempt 1 with ``PAUSE_AT_STEP=N``
right after optimizer step N (``paused`` appears).
"""
import json
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from _engine_toy import ToyTask
from vlkit.engine import Trainer


def wait_to_be_killed(marker: Path, text: str) -> None:
    marker.write_text(text)
    time.sleep(3600)


def hold_before_publishing(name: str, marker: Path) -> None:
    """Make the rename that publishes checkpoint ``name`` (file or folder) wait."""
    for function in ("replace", "rename"):
        original = getattr(os, function)

        def held(src, dst, *args, _original=original, **kwargs):
            if Path(dst).name.removesuffix(".ckpt") == name:
                wait_to_be_killed(marker, str(src))
            return _original(src, dst, *args, **kwargs)

        setattr(os, function, held)


def pause_after_step(step: int, marker: Path) -> None:
    original = Trainer._after_step

    def after_step(self, micro_batches):
        original(self, micro_batches)
        if self.state.global_step == step:
            wait_to_be_killed(marker, str(step))

    Trainer._after_step = after_step


if __name__ == "__main__":
    config_file = Path(sys.argv[1])
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    (config_file.parent / f"pid_{attempt}").write_text(str(os.getpid()))
    if attempt == "0" and os.environ.get("HOLD_CHECKPOINT"):
        hold_before_publishing(os.environ["HOLD_CHECKPOINT"], config_file.parent / "hold")
    if attempt == "1" and os.environ.get("PAUSE_AT_STEP"):
        pause_after_step(int(os.environ["PAUSE_AT_STEP"]), config_file.parent / "paused")
    cfg = OmegaConf.create(json.loads(config_file.read_text()))
    Trainer(cfg, ToyTask(cfg, dropout=0.0)).fit()

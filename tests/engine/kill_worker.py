"""A toy training run for the kill -9 test: ``python kill_worker.py CONFIG_JSON`` (under torchrun).

Each optimizer step takes a little longer (so a kill lands mid-run), the process writes its pid to
``pid_<restart>`` beside the config, and on the first attempt with ``HOLD_CHECKPOINT=NAME`` the
checkpoint ``NAME`` stops just before it is published (``hold`` appears and the process sleeps).
"""
import json
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from _engine_toy import ToyTask
from vlkit.engine import Trainer


def hold_before_publishing(name: str, marker: Path) -> None:
    """Make the rename that publishes checkpoint ``name`` (file or folder) never happen."""
    for function in ("replace", "rename"):
        original = getattr(os, function)

        def held(src, dst, *args, _original=original, **kwargs):
            if Path(dst).name.removesuffix(".ckpt") == name:
                marker.write_text(str(src))
                time.sleep(3600)
            return _original(src, dst, *args, **kwargs)

        setattr(os, function, held)


class SlowToyTask(ToyTask):
    def training_step(self, model, batch):
        time.sleep(0.05)
        return super().training_step(model, batch)


if __name__ == "__main__":
    config_file = Path(sys.argv[1])
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    (config_file.parent / f"pid_{attempt}").write_text(str(os.getpid()))
    if os.environ.get("HOLD_CHECKPOINT") and attempt == "0":
        hold_before_publishing(os.environ["HOLD_CHECKPOINT"], config_file.parent / "hold")
    cfg = OmegaConf.create(json.loads(config_file.read_text()))
    Trainer(cfg, SlowToyTask(cfg, dropout=0.0)).fit()

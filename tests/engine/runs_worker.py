"""Runs several trainings in one process group: ``python runs_worker.py RUNS_JSON`` under torchrun.

RUNS_JSON lists runs, each ``{"words": [...]}`` (a ``vlkit run with`` command line, task from the
config) or ``{"toy": {config}}`` (the engine tests' toy task, no dropout).
"""
import json
import sys

from omegaconf import OmegaConf

from _engine_toy import ToyTask
from vlkit.config import resolve_config
from vlkit.engine import Trainer
from vlkit.tasks import build_task
from vlkit.utils.distributed import destroy_distributed

if __name__ == "__main__":
    for run in json.loads(open(sys.argv[1]).read()):
        if "toy" in run:
            cfg = OmegaConf.create(run["toy"])
            Trainer(cfg, ToyTask(cfg, dropout=0.0)).fit()
        else:
            cfg = resolve_config(run["words"])
            Trainer(cfg, build_task(cfg)).fit()
    destroy_distributed()

"""One rank of the 2-process engine test: ``python ddp_toy_worker.py CONFIG_JSON`` under torchrun."""
import json
import sys

from omegaconf import OmegaConf

from _engine_toy import ToyTask
from vlkit.engine import Trainer
from vlkit.utils.distributed import destroy_distributed

if __name__ == "__main__":
    cfg = OmegaConf.create(json.loads(open(sys.argv[1]).read()))
    Trainer(cfg, ToyTask(cfg, dropout=0.0)).fit()
    destroy_distributed()

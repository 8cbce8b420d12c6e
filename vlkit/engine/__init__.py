"""The training engine: ``Trainer(cfg, task).fit()`` and ``.test()``."""
from vlkit.engine.trainer import Trainer

__all__ = ["Trainer"]

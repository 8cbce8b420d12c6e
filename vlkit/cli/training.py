"""Train or test one resolved config: what ``vlkit run`` and the seeds' command lines share."""
from __future__ import annotations

from typing import Any


def train_or_test(cfg: Any) -> dict[str, Any]:
    """Build the task and trainer for ``cfg`` and run ``fit`` (or ``test`` when ``test_only``)."""
    from vlkit.engine.trainer import Trainer
    from vlkit.tasks import build_task
    from vlkit.utils import distributed

    try:
        trainer = Trainer(cfg, build_task(cfg))
        return trainer.test() if cfg.test_only else trainer.fit()
    finally:
        distributed.destroy_distributed()

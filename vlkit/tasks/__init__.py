"""Tasks by name, and choosing one from a config (``task=auto`` reads ``loss_names``)."""
from __future__ import annotations

import difflib
from typing import Any

from vlkit.tasks.base import Task
from vlkit.tasks.classification import Nlvr2Task, SnliVeTask
from vlkit.tasks.clipvil import ClipVilPretrainTask, ClipVilVqaTask
from vlkit.tasks.irtr import AlbefRetrievalTask, IRTRTask
from vlkit.tasks.mae_pretrain import MaePretrainTask
from vlkit.tasks.nlvr_ta import NlvrTextAssignmentTask
from vlkit.tasks.pretrain import PRETRAIN_TERMS, PretrainTask, runs
from vlkit.tasks.vqa import VQATask
from vlkit.tasks.vqa_rank import VqaRankTask

TASKS: dict[str, type[Task]] = {
    "pretrain": PretrainTask,
    "vqa": VQATask,
    "nlvr2": Nlvr2Task,
    "irtr": IRTRTask,
    "albef_retrieval": AlbefRetrievalTask,
    "snli": SnliVeTask,
    "nlvr_ta": NlvrTextAssignmentTask,
    "vqa_decoder": VqaRankTask,
    "clipvil_pretrain": ClipVilPretrainTask,
    "clipvil_vqa": ClipVilVqaTask,
    "mae_pretrain": MaePretrainTask,
}


def task_name(cfg: Any) -> str:
    """``cfg.task``, or with ``auto`` the task the ``loss_names`` switch on (as the reference)."""
    if cfg.task != "auto":
        return cfg.task
    running = [term for term, value in cfg.loss_names.items() if value >= 1]
    downstream = [term for term in running if term not in PRETRAIN_TERMS]
    if len(downstream) > 1:
        raise ValueError(f"loss_names switch on several downstream tasks {downstream}; train one at a time")
    if downstream:
        return downstream[0]
    if running:
        return "pretrain"
    raise ValueError("no task runs: every loss_names value is below 1; e.g. loss_names.mlm=1")


def build_task(cfg: Any) -> Task:
    """The task the config asks for, constructed on it."""
    name = task_name(cfg)
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1, cutoff=0.0)
        raise ValueError(
            f"no task {name!r} is registered (known: {sorted(TASKS)}); did you mean {close[0]!r}?"
        )
    return TASKS[name](cfg)


__all__ = ["TASKS", "Task", "build_task", "runs", "task_name"]

"""The one small interface between the engine and a task."""
from __future__ import annotations

import abc
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from vlkit.tasks.ablation import BlankImages


class Task(abc.ABC):
    """What a task must provide to be trained and evaluated by ``vlkit.engine.Trainer``.

    Subclasses set ``name`` and implement every method. ``cfg`` is the resolved run config.
    """

    name: str = ""
    ablation_metrics: tuple[str, ...] = ()
    """Metrics that ``eval_image_ablation`` reports again with blank images (``{m}_blank``,
    ``{m}_image_gain``); the first gives ``image_gain``. Empty: no image-ablation baseline."""

    def __init__(self, cfg: Any):
        self.cfg = cfg

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The model, with any ``pretrain_path`` / ``load_path`` weights already loaded."""

    @abc.abstractmethod
    def build_dataset(self, split: str) -> Dataset | None:
        """Dataset for ``split`` in ``{"train", "val", "test"}``; None when the task has none."""

    @abc.abstractmethod
    def collate_fn(self, split: str) -> Callable[[list], dict]:
        """Turns a list of samples into a batch dict (see docs/architecture.md)."""

    @abc.abstractmethod
    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """Forward and losses on one batch. Must hold ``loss`` (the total to back-propagate);
        every other scalar entry is logged (averaged over the logging interval)."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        """Full evaluation over ``loader`` (the local shard of the split under DDP), reduced
        across processes. Must hold ``the_metric`` (higher is better), used to pick best.ckpt."""

    def evaluate_blank(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        """``evaluate`` with every image blank (the normalisation mean): the image-ablation baseline."""
        return self.evaluate(model, BlankImages(loader), split)

    def on_train_batch(self, epoch: int, batch_in_epoch: int, batches_per_epoch: int) -> None:
        """Called before each training batch (e.g. to ramp a loss weight over the first epoch)."""

    def on_checkpoint(self, checkpoint: dict[str, Any], is_best: bool, end_of_epoch: bool) -> None:
        """Called on rank 0 after the trainer writes ``checkpoint`` (``last.ckpt``, and
        ``best.ckpt`` when ``is_best``; ``end_of_epoch``: written as the epoch's last batch
        finished), e.g. to export it in a reference repository's layout."""

    def evaluation_info(self) -> dict[str, Any]:
        """How this task evaluates, recorded with every evaluation (e.g. the retrieval protocol)."""
        return {}

    def test(self, model: nn.Module, loader, out_dir: str) -> dict[str, float]:
        """``test_only=True``: evaluate on the test split and write any submission files."""
        return self.evaluate(model, loader, split="test")

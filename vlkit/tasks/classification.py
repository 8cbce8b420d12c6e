"""Fine-tuning tasks that classify each sample from pooled features: NLVR2 and SNLI-VE.

Their evaluation splits mix a dev and a test file, as the reference's; accuracy is reported per
file (``dev_accuracy``, ``test_accuracy``) and ``the_metric`` is the **dev** accuracy (the
reference's NLVR2 selected checkpoints on test-P, fact sheet §6.2).
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn

from vlkit.eval.metrics import SumMeter, ratio
from vlkit.objectives import LossOutput, classification_loss
from vlkit.tasks.arrow_task import ArrowTask, logged_terms
from vlkit.utils.tensors import move_to_device


class ClassificationTask(ArrowTask):
    """Cross-entropy on ``head(features)`` against ``batch[label_key]``; accuracy per file group.

    Subclasses set ``name``, ``datasets`` (the datasets it reads, one at a time), ``head`` (model
    attribute), ``label_key``, ``num_classes`` (chance is the majority class of each group) and
    ``groups`` (file name → metric prefix; several files may share a prefix), and implement
    ``features``.
    """

    datasets: ClassVar[tuple[str, ...]] = ()
    head: ClassVar[str] = ""
    label_key: ClassVar[str] = "labels"
    groups: ClassVar[dict[str, str]] = {}
    selection_group: ClassVar[str] = "dev"
    num_classes: ClassVar[int] = 2
    ablation_metrics = ("dev_accuracy", "accuracy", "test_accuracy")

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if list(cfg.datasets) not in [[name] for name in self.datasets]:
            choices = " or ".join(f"datasets=['{name}']" for name in self.datasets)
            raise ValueError(f"the {self.name} task reads {choices}; got {list(cfg.datasets)}")

    @property
    def group_names(self) -> list[str]:
        """The metric prefixes of ``groups``, each once, then ``all``."""
        return list(dict.fromkeys([*self.groups.values(), "all"]))

    @abc.abstractmethod
    def features(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """Pooled features (B, head input width) of the batch."""

    def compute(self, model: nn.Module, batch: dict) -> LossOutput:
        logits = getattr(model, self.head)(self.features(model, batch))
        return classification_loss(logits, batch[self.label_key])

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        out = self.compute(model, batch)
        return {"loss": out.loss, **logged_terms({self.name: out})}

    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        """Loss, accuracy and majority-class chance per group (and ``all``); ``the_metric`` is the
        selection group's accuracy (all samples' when the split has no such group)."""
        device = next(model.parameters()).device
        meter = SumMeter(device)
        for group in self.group_names:  # every rank adds every key
            for field in ("samples", "correct", "loss"):
                meter.add(f"{group}_{field}", 0.0)
            for label in range(self.num_classes):
                meter.add(f"{group}_label{label}", 0.0)
        meter.add("num_skipped_images", 0.0)
        for batch in loader:
            batch = move_to_device(batch, device)
            meter.add("num_skipped_images", batch.get("num_skipped_images", 0))
            logits = getattr(model, self.head)(self.features(model, batch)).float()
            labels = batch[self.label_key]
            losses = nn.functional.cross_entropy(logits, labels, reduction="none")
            correct = logits.argmax(dim=1) == labels
            names = batch.get("table_name") or [""] * len(labels)
            for group in self.group_names:
                members = torch.tensor(
                    [group in ("all", self.groups.get(table)) for table in names], device=device
                )
                meter.add(f"{group}_samples", members.sum())
                meter.add(f"{group}_correct", (correct & members).sum())
                meter.add(f"{group}_loss", losses[members].sum())
                for label in range(self.num_classes):
                    meter.add(f"{group}_label{label}", ((labels == label) & members).sum())
        return self._metrics(meter.reduce())

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        metrics = {"num_skipped_images": sums["num_skipped_images"]}
        for group in self.group_names:
            if not sums[f"{group}_samples"]:
                continue
            prefix = "" if group == "all" else f"{group}_"
            metrics[f"{prefix}accuracy"] = ratio(sums, f"{group}_correct", f"{group}_samples")
            metrics[f"{prefix}loss"] = ratio(sums, f"{group}_loss", f"{group}_samples")
            majority = max(sums[f"{group}_label{label}"] for label in range(self.num_classes))
            metrics[f"{prefix}chance"] = majority / sums[f"{group}_samples"]
        selected = f"{self.selection_group}_accuracy"
        metrics["the_metric"] = metrics.get(selected, metrics.get("accuracy", 0.0))
        return metrics


class Nlvr2Task(ClassificationTask):
    """NLVR2 (fact sheet §3.6) on the Arrow tables (``nlvr2``) or ALBEF's json files
    (``json_nlvr``): the statement with each image in its own pass (image token types 1 and 2),
    pooled features concatenated, then the 2-way ``nlvr2_classifier``. A paired model
    (``pair_fusion``, ALBEF's, grit_albef.md §2.7) reads both images in one pass instead, and its
    ``nlvr2_classifier`` takes the fused CLS."""

    name = "nlvr2"
    datasets = ("nlvr2", "json_nlvr")
    head = "nlvr2_classifier"
    label_key = "answers"
    groups = {"nlvr2_dev": "dev", "nlvr2_test1": "test", "nlvr_dev": "dev", "nlvr_test": "test"}

    def features(self, model: nn.Module, batch: dict) -> torch.Tensor:
        if getattr(model, "pair_fusion", False):
            images = (batch["image_0"], batch["image_1"])
            return model.infer(batch["text_ids"], batch["text_masks"], images)["cls_feats"]
        first = model.infer(batch["text_ids"], batch["text_masks"], batch["image_0"], image_token_type_idx=1)
        second = model.infer(batch["text_ids"], batch["text_masks"], batch["image_1"], image_token_type_idx=2)
        return torch.cat([first["cls_feats"], second["cls_feats"]], dim=-1)


class SnliVeTask(ClassificationTask):
    """SNLI-VE: 3-way (contradiction, neutral, entailment) ``snli_classifier`` on the pooled
    features of the hypothesis and the image."""

    name = "snli"
    datasets = ("snli",)
    head = "snli_classifier"
    label_key = "labels"
    groups = {"snli_dev": "dev", "snli_test": "test"}
    num_classes = 3

    def features(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model.infer(batch["text_ids"], batch["text_masks"], batch["image"])["cls_feats"]

"""ALBEF's text-assignment (TA) pre-training of the paired NLVR2 encoder (grit_albef.md §2.7).

Each caption of an image-caption batch is fused with two images at once (``pair_fusion``): with
probability 2/3 its own image sits in slot 0 or slot 1 (equally likely; label 0 or 1) and an
image similar to it in the other slot, otherwise two similar images (label 2). Similar images are
drawn per caption from the softmax of image-image ITC similarity / 0.07 over the batch's other
images. ``ta_head`` (Linear(H, 3) on the fused CLS) is trained with cross-entropy; ITC's
projection only measures similarity (no gradient), as ALBEF's ``Pretrain_nlvr.py``.

The draws use a ``torch.Generator``: in training one seeded from the global torch RNG per step
(which the engine seeds with ``seed + rank`` and keeps in checkpoints, so a resumed run draws the
same), in evaluation one seeded with ``seed`` (the same assignments at every evaluation).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlkit.eval.metrics import SumMeter, ratio
from vlkit.objectives import LossOutput, classification_loss
from vlkit.tasks.arrow_task import ArrowTask, logged_terms
from vlkit.utils.tensors import move_to_device

TA_TEMPERATURE = 0.07
"""Temperature of the image-image similarity (fixed in ALBEF, not the learnable ITC one)."""
NUM_LABELS = 3
"""0: the caption's image is in slot 0; 1: in slot 1; 2: in neither."""


def assign_images(similarity: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(slot_0, slot_1, labels)``, each (B,) on the CPU, for captions whose images have the
    pairwise ``similarity`` (B, B; logits, the diagonal is ignored).

    ``slot_k[b]`` is the batch row of the image in slot k for caption b. Other images are drawn
    from ``softmax(similarity[b])`` over the rows other than b, two different ones for label 2
    (in a batch of two the one other image fills both slots).
    """
    size = similarity.shape[0]
    if size < 2:
        raise ValueError(f"text assignment needs at least 2 images in a batch to draw others from; got {size}")
    own = torch.arange(size)
    logits = similarity.detach().float().cpu().masked_fill(own[:, None] == own, float("-inf"))
    others = torch.multinomial(logits.softmax(dim=1), 2, replacement=size < 3, generator=generator)
    neither = torch.rand(size, generator=generator) < 1 / 3
    slot = (torch.rand(size, generator=generator) < 0.5).long()
    labels = torch.where(neither, 2, slot)
    first = torch.where(labels == 0, own, others[:, 0])
    second = torch.where(labels == 0, others[:, 0], torch.where(labels == 1, own, others[:, 1]))
    return first, second, labels


class NlvrTextAssignmentTask(ArrowTask):
    """TA on image-caption data (``json_pretrain`` as ALBEF, or any caption dataset) for a
    ``pair_fusion`` model; ``the_metric`` is the TA accuracy."""

    name = "nlvr_ta"
    ablation_metrics = ("nlvr_ta_accuracy",)

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if cfg.model != "cross_attention" or not cfg.pair_fusion:
            raise ValueError(
                f"nlvr_ta trains ALBEF's paired NLVR2 encoder: set model=cross_attention pair_fusion=True "
                f"(got model={cfg.model!r}, pair_fusion={cfg.pair_fusion}); the grit_nlvr_pretrain preset does"
            )
        if not 0 < cfg.loss_names.get("itc", 0) < 1:
            raise ValueError(
                f"loss_names.itc={cfg.loss_names.get('itc', 0)}: nlvr_ta draws similar images by ITC "
                "image similarity and trains nothing else; set loss_names.itc=0.5 (builds the head, no ITC loss)"
            )
        others = {term: value for term, value in cfg.loss_names.items() if value >= 1 and term != self.name}
        if others:
            raise ValueError(f"loss_names {others}: nlvr_ta trains only the text assignment; set them below 1")

    def compute(self, model: nn.Module, batch: dict,
                generator: torch.Generator) -> tuple[LossOutput, torch.Tensor]:
        """TA loss and accuracy of a batch of at least two images, and the labels, images assigned
        with ``generator``."""
        embeds = model.embed_image(batch["image"])
        with torch.no_grad():
            features = model.itc_head.embed_image(model.image_only_feats(embeds))
            similarity = features @ features.t() / TA_TEMPERATURE
        first, second, labels = assign_images(similarity, generator)
        device = batch["image"].device
        pair = [{key: value[rows.to(device)] for key, value in embeds.items()} for rows in (first, second)]
        fused = model.infer(batch["text_ids"], batch["text_masks"], image_embeds=pair)
        labels = labels.to(device)
        return classification_loss(model.ta_head(fused["cls_feats"]), labels), labels

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        if batch["image"].shape[0] < 2:  # a last batch of one: no other image to assign
            return {"loss": model.ta_head.weight.sum() * 0.0}
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        out, _ = self.compute(model, batch, generator)
        return {"loss": out.loss, **logged_terms({self.name: out})}

    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        """``nlvr_ta_accuracy`` / ``_loss`` over the split and ``nlvr_ta_chance`` (the most frequent
        label's share, 1/3 in expectation); ``the_metric`` is the accuracy."""
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(self.cfg.seed)
        meter = SumMeter(device)
        for key in ("num_skipped_images", "correct", "total", "loss", *(f"label{k}" for k in range(NUM_LABELS))):
            meter.add(key, 0.0)  # every rank adds every key
        for batch in loader:
            batch = move_to_device(batch, device)
            meter.add("num_skipped_images", batch.get("num_skipped_images", 0))
            if batch["image"].shape[0] < 2:
                continue
            out, labels = self.compute(model, batch, generator)
            meter.add("correct", out.correct)
            meter.add("total", out.total)
            meter.add("loss", out.loss.detach() * out.total)
            for label in range(NUM_LABELS):
                meter.add(f"label{label}", (labels == label).sum())
        sums = meter.reduce()
        majority = max(sums[f"label{label}"] for label in range(NUM_LABELS))
        accuracy = ratio(sums, "correct", "total")
        return {
            "nlvr_ta_accuracy": accuracy, "nlvr_ta_loss": ratio(sums, "loss", "total"),
            "nlvr_ta_chance": majority / sums["total"] if sums["total"] else 0.0,
            "num_skipped_images": sums["num_skipped_images"], "the_metric": accuracy,
        }

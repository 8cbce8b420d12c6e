"""The image-text contrastive term as tasks run it: text-only and image-only passes, projected;
with ALBEF's momentum model, against its features and queue (``vlkit.models.momentum``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlkit.objectives import LossOutput, itc_loss, momentum_itc_loss


@dataclass
class ContrastiveOutput(LossOutput):
    """ITC loss with the unit embeddings it compared (kept for hard negatives and GRIT sampling)."""

    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None

    def similarity(self) -> torch.Tensor:
        """(B, B) detached cosine similarity, row i image i, column j text j."""
        return (self.image_embeds @ self.text_embeds.t()).detach()


@dataclass
class MomentumBatch:
    """The momentum model's view of a batch: its image tokens (for MLM distillation) and its
    unit ITC features of the images and texts (the first ITC keys, then queued)."""

    image_embeds: dict[str, torch.Tensor]
    image: torch.Tensor
    text: torch.Tensor


@torch.no_grad()
def momentum_batch(model: nn.Module, text_ids: torch.Tensor, text_masks: torch.Tensor, images: torch.Tensor,
                   mask_image: bool | None) -> MomentumBatch:
    """``model.momentum_model``'s image tokens and ITC features of the batch."""
    teacher = model.momentum_model
    embeds = teacher.embed_image(images, mask_image=mask_image)
    image = teacher.itc_head.embed_image(teacher.image_only_feats(embeds))
    text = teacher.itc_head.embed_text(teacher.text_only_feats(text_ids, text_masks))
    return MomentumBatch(embeds, image, text)


def _itc_embeddings(model: nn.Module, text_ids: torch.Tensor, text_masks: torch.Tensor,
                    image_embeds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    text = model.itc_head.embed_text(model.text_only_feats(text_ids, text_masks))
    return model.itc_head.embed_image(model.image_only_feats(image_embeds)), text


def momentum_itc_term(model: nn.Module, text_ids: torch.Tensor, text_masks: torch.Tensor,
                      image_embeds: dict[str, torch.Tensor], teacher: MomentumBatch,
                      image_index: torch.Tensor, cfg: Any, alpha: float) -> ContrastiveOutput:
    """ALBEF's ITC: the online features against the momentum features of the batch and of
    ``model.itc_queue`` (when there is one), soft targets with weight ``alpha``; positives are
    the paired rows, or every row of the same ``image_index`` with ``itc_same_image_positives``.
    The queue is not changed here (``FeatureQueue.enqueue`` after the step's terms)."""
    image, text = _itc_embeddings(model, text_ids, text_masks, image_embeds)
    rows = torch.arange(len(image), device=image.device)
    query_index = image_index if cfg.itc_same_image_positives else rows
    image_keys, text_keys, key_index = teacher.image, teacher.text, query_index
    queue = getattr(model, "itc_queue", None)
    if queue is not None:
        image_keys = torch.cat([image_keys, queue.image.to(image_keys.dtype)])
        text_keys = torch.cat([text_keys, queue.text.to(text_keys.dtype)])
        queued = queue.index if cfg.itc_same_image_positives else torch.full_like(queue.index, -1)
        key_index = torch.cat([key_index, queued])
    positives = query_index[:, None] == key_index[None, :]
    out = momentum_itc_loss(image, text, image_keys, text_keys, positives, model.itc_head.logit_scale,
                            alpha=alpha, max_logit_scale=cfg.itc_max_logit_scale,
                            min_logit_scale=cfg.itc_min_logit_scale)
    return ContrastiveOutput(out.loss, out.correct, out.total, image_embeds=image, text_embeds=text)


def itc_term(model: nn.Module, text_ids: torch.Tensor, text_masks: torch.Tensor,
             image_embeds: dict[str, torch.Tensor], cfg: Any) -> ContrastiveOutput:
    """ITC loss of matched (text, image) rows from text-only and image-only passes, in the form
    ``cfg`` asks for (``itc_in_batch``, ``itc_consistency_weight``, ``itc_max_logit_scale``)."""
    image, text = _itc_embeddings(model, text_ids, text_masks, image_embeds)
    out = itc_loss(
        image, text, model.itc_head.logit_scale, max_logit_scale=cfg.itc_max_logit_scale,
        min_logit_scale=cfg.itc_min_logit_scale,
        in_batch=cfg.itc_in_batch, consistency_weight=cfg.itc_consistency_weight,
    )
    return ContrastiveOutput(out.loss, out.correct, out.total, image_embeds=image, text_embeds=text)

"""The image-text contrastive term as tasks run it: text-only and image-only passes, projected."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlkit.objectives import LossOutput, itc_loss


@dataclass
class ContrastiveOutput(LossOutput):
    """ITC loss with the unit embeddings it compared (kept for hard negatives and GRIT sampling)."""

    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None

    def similarity(self) -> torch.Tensor:
        """(B, B) detached cosine similarity, row i image i, column j text j."""
        return (self.image_embeds @ self.text_embeds.t()).detach()


def itc_term(model: nn.Module, text_ids: torch.Tensor, text_masks: torch.Tensor,
             image_embeds: dict[str, torch.Tensor], cfg: Any) -> ContrastiveOutput:
    """ITC loss of matched (text, image) rows from text-only and image-only passes, in the form
    ``cfg`` asks for (``itc_in_batch``, ``itc_consistency_weight``, ``itc_max_logit_scale``)."""
    text = model.itc_head.embed_text(model.text_only_feats(text_ids, text_masks))
    image = model.itc_head.embed_image(model.image_only_feats(image_embeds))
    out = itc_loss(
        image, text, model.itc_head.logit_scale, max_logit_scale=cfg.itc_max_logit_scale,
        in_batch=cfg.itc_in_batch, consistency_weight=cfg.itc_consistency_weight,
    )
    return ContrastiveOutput(out.loss, out.correct, out.total, image_embeds=image, text_embeds=text)

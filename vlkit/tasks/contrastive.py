"""The image-text contrastive term as tasks run it: text-only and image-only passes, projected."""
from __future__ import annotations

import torch
from torch import nn

from vlkit.objectives import LossOutput, itc_loss


def itc_term(model: nn.Module, text_ids: torch.Tensor, text_masks: torch.Tensor,
             image_embeds: dict[str, torch.Tensor]) -> LossOutput:
    """ITC loss of matched (text, image) rows from text-only and image-only passes."""
    text = model.itc_head.embed_text(model.text_only_feats(text_ids, text_masks))
    image = model.itc_head.embed_image(model.image_only_feats(image_embeds))
    return itc_loss(image, text, model.itc_head.logit_scale)

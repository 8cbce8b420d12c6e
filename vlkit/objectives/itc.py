"""Image-text contrastive loss: symmetric InfoNCE (CLIP, ALBEF) and GRIT-VLP's variant."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather

from vlkit.objectives.mlm import LossOutput

CLIP_MAX_LOGIT_SCALE = math.log(100)


def _gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows, this rank's first (gradients flow back to the local rows); and the offset
    of the local rows in the result."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    rows = all_gather(x)
    rank = dist.get_rank()
    return torch.cat(rows), rank * x.shape[0]


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy of ``logits`` against softmax(``target_logits``),
    the target detached."""
    targets = target_logits.detach().softmax(dim=1)
    return -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()


def itc_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE,
    in_batch: bool = False,
    consistency_weight: float = 0.0,
) -> LossOutput:
    """Mean of image→text and text→image cross-entropy over the similarity of unit vectors.

    ``image_embeds`` and ``text_embeds`` are (B, D), L2-normalised, row i of each a matched pair.
    ``logit_scale`` is the log inverse temperature, clamped to ``max_logit_scale`` (log 100 as
    CLIP; ALBEF's temp >= 0.001 is log 1000).

    * Default: the negatives are every rank's rows (gathered with gradients; equal B per rank).
    * ``in_batch`` (GRIT-VLP): only this rank's rows, and each direction back-propagates through
      its query side only (the keys are detached), as GRIT's code does.
    * ``consistency_weight`` w > 0 (GRIT: 0.2) adds w · (CE(i2t_b, softmax(t2i_b)) +
      CE(t2i_b, softmax(i2t_b))) / 2, the targets detached: image b's distribution over texts is
      pulled towards text b's distribution over images and vice versa.

    Accuracy counts image→text top-1 hits.
    """
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(f"image {tuple(image_embeds.shape)} and text {tuple(text_embeds.shape)} embeddings differ")
    if in_batch:
        all_images, all_texts, offset = image_embeds.detach(), text_embeds.detach(), 0
    else:
        all_images, offset = _gather_with_grad(image_embeds)
        all_texts, _ = _gather_with_grad(text_embeds)
    scale = logit_scale.clamp(max=max_logit_scale).exp()
    targets = torch.arange(offset, offset + image_embeds.shape[0], device=image_embeds.device)
    image_to_text = scale * image_embeds @ all_texts.t()
    text_to_image = scale * text_embeds @ all_images.t()
    loss = (F.cross_entropy(image_to_text, targets) + F.cross_entropy(text_to_image, targets)) / 2
    if consistency_weight > 0:
        consistency = soft_cross_entropy(image_to_text, text_to_image) + soft_cross_entropy(text_to_image, image_to_text)
        loss = loss + consistency_weight * consistency / 2
    with torch.no_grad():
        correct = (image_to_text.argmax(dim=1) == targets).sum()
    return LossOutput(loss=loss, correct=correct, total=torch.tensor(targets.numel(), device=loss.device))

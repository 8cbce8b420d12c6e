"""Image-text contrastive loss (symmetric InfoNCE, as CLIP and ALBEF's ITC)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather

from vlkit.objectives.mlm import LossOutput


def _gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows, this rank's first (gradients flow back to the local rows); and the offset
    of the local rows in the result."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    rows = all_gather(x)
    rank = dist.get_rank()
    return torch.cat(rows), rank * x.shape[0]


def itc_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> LossOutput:
    """Mean of image→text and text→image cross-entropy over the similarity of unit vectors.

    ``image_embeds`` and ``text_embeds`` are (B, D), L2-normalised, row i of each a matched pair;
    under DDP the negatives are every rank's rows (equal B per rank). ``logit_scale`` is the log
    temperature, clamped to log(100) as CLIP. Accuracy counts image→text top-1 hits.
    """
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(f"image {tuple(image_embeds.shape)} and text {tuple(text_embeds.shape)} embeddings differ")
    all_images, offset = _gather_with_grad(image_embeds)
    all_texts, _ = _gather_with_grad(text_embeds)
    scale = logit_scale.clamp(max=4.6052).exp()
    targets = torch.arange(offset, offset + image_embeds.shape[0], device=image_embeds.device)
    image_to_text = scale * image_embeds @ all_texts.t()
    text_to_image = scale * text_embeds @ all_images.t()
    loss = (F.cross_entropy(image_to_text, targets) + F.cross_entropy(text_to_image, targets)) / 2
    with torch.no_grad():
        correct = (image_to_text.argmax(dim=1) == targets).sum()
    return LossOutput(loss=loss, correct=correct, total=torch.tensor(targets.numel(), device=loss.device))

"""Image-text contrastive loss: symmetric InfoNCE (CLIP, ALBEF) and GRIT-VLP's variant."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.nn.functional import all_gather

from vlkit.objectives.mlm import LossOutput, cross_entropy_with_probs

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
    return cross_entropy_with_probs(logits, target_logits.detach().softmax(dim=-1))


def itc_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE,
    min_logit_scale: float | None = None,
    in_batch: bool = False,
    consistency_weight: float = 0.0,
) -> LossOutput:
    """Mean of image→text and text→image cross-entropy over the similarity of unit vectors.

    ``image_embeds`` and ``text_embeds`` are (B, D), L2-normalised, row i of each a matched pair.
    ``logit_scale`` is the log inverse temperature, clamped to ``[min_logit_scale,
    max_logit_scale]`` (CLIP: at most log 100, no lower bound; ALBEF's temp in [0.001, 0.5] is
    [log 2, log 1000]).

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
    scale = logit_scale.clamp(min=min_logit_scale, max=max_logit_scale).exp()
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


def momentum_itc_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    image_keys: torch.Tensor,
    text_keys: torch.Tensor,
    positives: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    alpha: float = 0.0,
    max_logit_scale: float = CLIP_MAX_LOGIT_SCALE,
    min_logit_scale: float | None = None,
) -> LossOutput:
    """ALBEF's ITC with a momentum model: each image (B, D) against ``text_keys`` (K, D) and each
    text against ``image_keys``, all unit vectors.

    The keys are the momentum model's features of this batch (row b: pair b) followed by its
    queue; gradients flow through the queries only. ``positives`` (B, K) marks each query's
    positive keys (at least key b); ``logit_scale`` is clamped as in :func:`itc_loss`. The hard target is uniform over them. With ``alpha`` > 0 it
    is mixed with the momentum model's own distribution over the keys (its queries are
    ``keys[:B]``): ``alpha · softmax(momentum logits) + (1 − alpha) · hard``. The loss is the mean
    of the two directions' cross-entropies; accuracy counts images whose best text is a positive.
    """
    batch = image_embeds.shape[0]
    if positives.shape != (batch, text_keys.shape[0]) or image_keys.shape != text_keys.shape:
        raise ValueError(
            f"positives {tuple(positives.shape)} must be (batch {batch}, keys {text_keys.shape[0]}) and "
            f"image keys {tuple(image_keys.shape)} match text keys {tuple(text_keys.shape)}"
        )
    image_keys, text_keys = image_keys.detach(), text_keys.detach()
    scale = logit_scale.clamp(min=min_logit_scale, max=max_logit_scale).exp()
    hard = positives.float() / positives.sum(dim=1, keepdim=True).clamp(min=1)
    image_to_text = scale * image_embeds @ text_keys.t()
    text_to_image = scale * text_embeds @ image_keys.t()
    image_targets = text_targets = hard
    if alpha > 0:
        with torch.no_grad():
            momentum_i2t = (scale * image_keys[:batch] @ text_keys.t()).softmax(dim=1)
            momentum_t2i = (scale * text_keys[:batch] @ image_keys.t()).softmax(dim=1)
        image_targets = alpha * momentum_i2t + (1 - alpha) * hard
        text_targets = alpha * momentum_t2i + (1 - alpha) * hard
    loss = (cross_entropy_with_probs(image_to_text, image_targets)
            + cross_entropy_with_probs(text_to_image, text_targets)) / 2
    with torch.no_grad():
        correct = positives.gather(1, image_to_text.argmax(dim=1, keepdim=True)).sum()
    return LossOutput(loss=loss, correct=correct, total=torch.tensor(batch, device=loss.device))

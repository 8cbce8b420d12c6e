"""Masked language modelling loss (fact sheet §3.1) and ``LossOutput``, shared by the
classification objectives."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""Label of a position that is not predicted."""


@dataclass
class LossOutput:
    """A classification loss with the counts behind its accuracy.

    ``correct`` and ``total`` are 0-dim long tensors on the loss's device, so they can be summed
    over batches and processes before dividing (exact accuracy aggregation).
    """

    loss: torch.Tensor
    correct: torch.Tensor
    total: torch.Tensor

    @property
    def accuracy(self) -> torch.Tensor:
        """``correct / total`` as a 0-dim float tensor; 0 when nothing was predicted."""
        return self.correct.double() / self.total.clamp(min=1)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> LossOutput:
    """Mean cross-entropy and argmax accuracy over the positions whose label is not -100.

    ``logits`` is (..., C) and ``labels`` has the leading shape. Without any labelled position the
    loss is a zero that still back-propagates (zero gradients) rather than NaN.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree: labels must have "
            f"the logits' shape without the last (class) dimension"
        )
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    labelled = flat_labels != IGNORE_INDEX
    total = labelled.sum()
    loss_sum = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    with torch.no_grad():
        correct = ((flat_logits.argmax(dim=-1) == flat_labels) & labelled).sum()
    return LossOutput(loss=loss_sum / total.clamp(min=1), correct=correct, total=total)


def cross_entropy_with_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy of ``logits`` against target distributions (rows sum
    to 1, detached)."""
    return -(targets.detach() * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> LossOutput:
    """MLM cross-entropy, averaged over the masked positions of the batch (labels != -100).

    ``logits`` is (B, L, V), ``labels`` (B, L) with -100 at positions that are not predicted.
    """
    if logits.ndim != 3:
        raise ValueError(f"MLM logits must be (B, L, V); got shape {tuple(logits.shape)}")
    return classification_loss(logits, labels)


def distilled_mlm_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor,
                       alpha: float) -> LossOutput:
    """ALBEF's MLM with distillation: ``(1 − alpha) · CE(labels) + alpha · CE(softmax(teacher))``,
    both averaged over the masked positions (labels != -100); accuracy against the labels."""
    hard = mlm_loss(logits, labels)
    masked = labels != IGNORE_INDEX
    if alpha <= 0 or not masked.any():
        return hard
    soft = cross_entropy_with_probs(logits[masked].float(), teacher_logits[masked].float().softmax(dim=-1))
    return LossOutput((1 - alpha) * hard.loss + alpha * soft, hard.correct, hard.total)

"""VQA: soft-score targets and the scaled binary cross-entropy (fact sheet §3.5)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def vqa_targets(
    labels: Sequence[Sequence[int]], scores: Sequence[Sequence[float]], num_classes: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Dense (B, num_classes) targets: each question's soft scores at its answer labels, 0 elsewhere."""
    targets = torch.zeros(len(labels), num_classes, device=device)
    for row, (answer_labels, answer_scores) in enumerate(zip(labels, scores)):
        if len(answer_labels) != len(answer_scores):
            raise ValueError(
                f"question {row}: {len(answer_labels)} answer labels but {len(answer_scores)} scores"
            )
        for label, score in zip(answer_labels, answer_scores):
            if not 0 <= label < num_classes:
                raise ValueError(
                    f"question {row}: answer label {label} is outside [0, {num_classes}); set "
                    f"vqav2_label_size to the answer vocabulary size"
                )
            targets[row, label] = score
    return targets


def vqa_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits averaged over all B·C entries, times C: the per-question sum over answers,
    averaged over questions (the reference's ban-vqa convention)."""
    if logits.shape != targets.shape:
        raise ValueError(f"VQA logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype)) * logits.shape[1]


"""VQA by answer generation (ALBEF, fact sheet §2.6): the weighted answer-sequence loss."""
from __future__ import annotations

import torch


def answer_generation_loss(sequence_log_probs: torch.Tensor, weights: torch.Tensor, num_questions: int) -> torch.Tensor:
    """ALBEF's VQA loss: -Σ weight · log p(answer | question) over the batch's (question, answer)
    pairs, divided by the number of questions. ``sequence_log_probs`` (N,) are each answer's summed
    token log-probabilities (teacher forced, pads ignored), ``weights`` (N,) the answers' weights."""
    if sequence_log_probs.shape != weights.shape or sequence_log_probs.dim() != 1:
        raise ValueError(
            f"sequence_log_probs {tuple(sequence_log_probs.shape)} and weights {tuple(weights.shape)} "
            f"must both be (N,): one entry per (question, answer) pair"
        )
    if num_questions < 1:
        raise ValueError(f"num_questions={num_questions}: the loss is a mean over the batch's questions")
    return -(weights.to(sequence_log_probs.dtype) * sequence_log_probs).sum() / num_questions

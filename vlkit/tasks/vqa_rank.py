"""VQA by answer generation and ranking (ALBEF / GRIT-VLP ``VQA.py``, fact sheet §2.6, §5.2).

The answer decoder (``text_decoder``, built by ``loss_names.vqa_decoder``) reads the fused
question states of the model's ``infer``. Training is ALBEF's: every (question, answer) pair of
the batch, the answer as ``[CLS] answer [SEP]``, teacher forced; the loss sums each answer's token
log-likelihoods, weighs them by the answer's ``vqa_scores`` entry (``json_vqa``: ALBEF's count /
number of answers, 0.5 for VG; Arrow ``vqa``: the soft VQA score) and divides by the number of
questions. Inference ranks the candidate answers (``answer_list`` for ``json_vqa``, the answer
vocabulary for ``vqa``; labels are positions in it): p(first wordpiece) of every candidate, the top
``k_test`` teacher forced in full, each scored by its sequence log-probability with every token
counted once (ALBEF counted the first token twice, fact sheet §7.14).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import torch
from torch import nn

from vlkit.models.fusion.cross_attention import text_positions
from vlkit.objectives.answer import answer_generation_loss
from vlkit.tasks.vqa import VQATask


@dataclass
class AnswerTokens:
    """Answers tokenised as ``[CLS] answer [SEP]``, right-padded: ``ids`` / ``masks`` (C, T)."""

    ids: torch.Tensor
    masks: torch.Tensor

    def to(self, device: torch.device) -> AnswerTokens:
        return AnswerTokens(self.ids.to(device), self.masks.to(device))

    def select(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, masks) of the answers at ``index`` (1-D, not empty), cut to their longest real length."""
        masks = self.masks[index]
        length = int(masks.sum(dim=-1).max())
        return self.ids[index][..., :length], masks[..., :length]


def tokenize_answers(tokenizer: Any, answers: Sequence[str], max_len: int) -> AnswerTokens:
    """``[CLS] answer [SEP]`` for every answer (truncated to ``max_len`` tokens), checked to start
    with one start token and to hold at least one token after it."""
    encoded = tokenizer(list(answers), padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    ids, masks = encoded["input_ids"], encoded["attention_mask"]
    if ids.shape[1] < 2 or not (ids[:, 0] == ids[0, 0]).all() or not masks[:, 1].bool().all():
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} does not encode answers as "
            f"[CLS] answer [SEP]; the answer decoder needs a BERT-style tokenizer that adds both"
        )
    return AnswerTokens(ids, masks.long())


def answer_pairs(labels: Sequence[Sequence[int]], scores: Sequence[Sequence[float]],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (question, answer) pair of a batch, question by question: the question's row, the
    answer's label and its weight (N,) each."""
    if any(len(a) != len(b) for a, b in zip(labels, scores)):
        raise ValueError("a question has a different number of answer labels and scores (vqa_labels, vqa_scores)")
    rows = [row for row, question_labels in enumerate(labels) for _ in question_labels]
    flat_labels = [label for question_labels in labels for label in question_labels]
    weights = [score for question_scores in scores for score in question_scores]
    return (torch.tensor(rows, dtype=torch.long, device=device),
            torch.tensor(flat_labels, dtype=torch.long, device=device),
            torch.tensor(weights, dtype=torch.float, device=device))


def rank_answers(decoder: nn.Module, question_states: torch.Tensor, question_masks: torch.Tensor,
                 candidates: AnswerTokens, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ALBEF's ``rank_answer``, batched: the decoder on the start token alone gives p(first
    wordpiece) of every candidate; the ``k`` most likely candidates of each question are teacher
    forced in full and scored by log p(answer | question) (every token once). Returns their
    positions in ``candidates`` and their scores, both (B, k), best first."""
    num_questions, k = len(question_states), min(k, len(candidates.ids))
    start = candidates.ids[:1, :1].expand(num_questions, 1)
    first = decoder(start, torch.ones_like(start), question_states, question_masks)[:, 0]
    first_log_probs = decoder.lm_head(first).float().log_softmax(dim=-1)[:, candidates.ids[:, 1]]
    top = first_log_probs.topk(k, dim=1).indices
    ids, masks = candidates.select(top.flatten())
    scores = decoder.sequence_log_probs(
        ids, masks, question_states.repeat_interleave(k, dim=0), question_masks.repeat_interleave(k, dim=0)
    ).view(num_questions, k)
    scores, order = scores.sort(dim=1, descending=True)
    return top.gather(1, order), scores


class VqaRankTask(VQATask):
    """ALBEF's VQA: the answer decoder trained on the batch's answers, evaluated by ranking the
    candidate answers (see the module). Reports as ``vqa``: ``score`` (soft score of the predicted
    answer; ``the_metric``), ``loss`` (the training loss), ``chance``, and ``vqa_accuracy`` when the
    official annotations are there. ``test`` writes ``{run_dir}/result/vqa_result.json``."""

    name = "vqa_decoder"

    def __init__(self, cfg: Any):
        if cfg.loss_names.get("vqa_decoder", 0) <= 0:
            raise ValueError("the vqa_decoder task trains the answer decoder: set loss_names.vqa_decoder=1")
        if cfg.k_test < 1:
            raise ValueError(f"k_test={cfg.k_test}: rank at least one candidate answer per question (ALBEF: 128)")
        super().__init__(cfg)
        self._candidates_on: dict[torch.device, AnswerTokens] = {}

    @property
    def num_answers(self) -> int:
        """The candidate answers (labels are positions among them)."""
        return len(self.answers)

    @cached_property
    def candidates(self) -> AnswerTokens:
        """Every candidate answer, tokenised once."""
        return tokenize_answers(self.tokenizer, self.answers, text_positions(self.cfg))

    def candidates_on(self, device: torch.device) -> AnswerTokens:
        if device not in self._candidates_on:
            self._candidates_on[device] = self.candidates.to(device)
        return self._candidates_on[device]

    def evaluation_info(self) -> dict[str, Any]:
        return {"k_test": self.cfg.k_test, "candidates": self.num_answers}

    def answer_loss(self, model: nn.Module, batch: dict, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """ALBEF's weighted answer loss on the batch's (question, answer) pairs."""
        states = features["text_feats"]
        rows, labels, weights = answer_pairs(batch["vqa_labels"], batch["vqa_scores"], states.device)
        if len(rows) == 0:  # no question has an answer among the candidates: zero, still a graph
            return states.sum() * 0.0
        ids, masks = self.candidates_on(states.device).select(labels)
        log_probs = model.text_decoder.sequence_log_probs(ids, masks, states[rows], features["text_masks"][rows])
        return answer_generation_loss(log_probs, weights, len(batch["vqa_labels"]))

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        features = model.infer(batch["text_ids"], batch["text_masks"], batch["image"])
        loss = self.answer_loss(model, batch, features)
        return {"loss": loss, "vqa_decoder_loss": loss.detach()}

    def predict(self, model: nn.Module, batch: dict, with_loss: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = model.infer(batch["text_ids"], batch["text_masks"], batch["image"])
        states = features["text_feats"]
        ranked, _ = rank_answers(model.text_decoder, states, features["text_masks"],
                                 self.candidates_on(states.device), self.cfg.k_test)
        return ranked[:, 0], self.answer_loss(model, batch, features) if with_loss else None

    def submission_path(self, out_dir: str) -> str:
        """``{run_dir}/result/vqa_result.json`` (ALBEF: ``<output_dir>/result/vqa_result_epoch{E}.json``)."""
        return os.path.join(out_dir, "result", "vqa_result.json")

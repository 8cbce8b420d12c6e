"""VQAv2 fine-tuning (fact sheet §3.5, §6.1): the ``vqa_classifier`` over the answer vocabulary,
BCE on soft scores, the soft-score metric and the official VQA accuracy, and the test submission."""
from __future__ import annotations

import logging
import os
from functools import cached_property
from typing import Any

import torch
from torch import nn

from vlkit.data.datasets.vqa import annotations_path, answer_vocabulary, official_answers
from vlkit.eval.metrics import SumMeter, ratio
from vlkit.eval.submission import checkpoint_stem, gather_predictions, write_vqa_submission
from vlkit.eval.vqa_score import soft_score_accuracy, vqa_accuracy
from vlkit.objectives import vqa_loss, vqa_targets
from vlkit.tasks.arrow_task import ArrowTask
from vlkit.utils import distributed
from vlkit.utils.tensors import move_to_device

log = logging.getLogger(__name__)


class VQATask(ArrowTask):
    """VQAv2: logits = ``vqa_classifier(cls_feats)`` over ``vqav2_label_size`` answers.

    Validation reports ``score`` (the reference's VQAScore: soft score of the arg-max answer),
    ``vqa_accuracy`` (the official metric on answer strings, when the official annotations of the
    questions are available: see ``vqa_annotations``), ``loss`` and ``chance`` (the best single
    answer's score). ``the_metric`` is ``score``. ``test`` writes the submission file.
    """

    name = "vqa"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if "vqa" not in cfg.datasets:
            raise ValueError(f"the vqa task reads datasets=['vqa']; got {list(cfg.datasets)}")

    @cached_property
    def answers(self) -> list[str]:
        """Label → answer string."""
        return answer_vocabulary(self.cfg.data_root, self.cfg.vqav2_label_size)

    @cached_property
    def human_answers(self) -> dict[int, list[str]] | None:
        """Question id → the human answers of the official annotations (None without the file)."""
        path = annotations_path(self.cfg)
        if path is None:
            log.info("no official VQA annotations (vqa_annotations); reporting the soft score only")
            return None
        return official_answers(path)

    def logits(self, model: nn.Module, batch: dict) -> torch.Tensor:
        features = model.infer(batch["text_ids"], batch["text_masks"], batch["image"])
        return model.vqa_classifier(features["cls_feats"])

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.logits(model, batch)
        targets = vqa_targets(batch["vqa_labels"], batch["vqa_scores"], logits.shape[1], logits.device)
        loss = vqa_loss(logits, targets)
        score = soft_score_accuracy(logits.float(), targets)
        return {"loss": loss, "vqa_loss": loss.detach(), "vqa_score": torch.tensor(score)}

    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        device = next(model.parameters()).device
        meter = SumMeter(device)
        for key in ("questions", "score", "loss", "num_skipped_images", "official_questions", "official_accuracy"):
            meter.add(key, 0.0)
        answer_scores = torch.zeros(self.cfg.vqav2_label_size, dtype=torch.float64, device=device)
        for batch in loader:
            batch = move_to_device(batch, device)
            logits = self.logits(model, batch).float()
            targets = vqa_targets(batch["vqa_labels"], batch["vqa_scores"], logits.shape[1], device)
            meter.add("questions", len(targets))
            meter.add("score", soft_score_accuracy(logits, targets, reduction="sum"))
            meter.add("loss", vqa_loss(logits, targets) * len(targets))
            meter.add("num_skipped_images", batch.get("num_skipped_images", 0))
            answer_scores += targets.sum(dim=0).double()
            if self.human_answers is not None:
                self._add_official(meter, logits, batch["qid"].tolist())
        sums = meter.reduce()
        answer_scores = distributed.all_reduce_sum(answer_scores)
        metrics = {
            "score": ratio(sums, "score", "questions"),
            "loss": ratio(sums, "loss", "questions"),
            "chance": float(answer_scores.max()) / max(sums["questions"], 1),
            "num_skipped_images": sums["num_skipped_images"],
        }
        if sums["official_questions"]:
            metrics["vqa_accuracy"] = ratio(sums, "official_accuracy", "official_questions")
            metrics["official_questions"] = sums["official_questions"]
        metrics["the_metric"] = metrics["score"]
        return metrics

    def _add_official(self, meter: SumMeter, logits: torch.Tensor, question_ids: list[int]) -> None:
        for label, question_id in zip(logits.argmax(dim=1).tolist(), question_ids):
            human = self.human_answers.get(question_id)
            if human:
                meter.add("official_questions", 1.0)
                meter.add("official_accuracy", vqa_accuracy(self.answers[label], human))

    def test(self, model: nn.Module, loader, out_dir: str) -> dict[str, float]:
        """Predict every test question and write ``{log_dir}/vqa_submit_{checkpoint stem}.json``
        (a list of ``{"question_id", "answer"}``, each test question exactly once)."""
        device = next(model.parameters()).device
        local: list[tuple[int, str]] = []
        for batch in loader:
            batch = move_to_device(batch, device)
            labels = self.logits(model, batch).argmax(dim=1).tolist()
            local += [(qid, self.answers[label]) for qid, label in zip(batch["qid"].tolist(), labels)]
        predictions = gather_predictions(local)
        counts = {"questions": 0, "unanswered": 0}
        path = os.path.join(self.cfg.log_dir, f"vqa_submit_{checkpoint_stem(self.cfg.load_path)}.json")
        if distributed.is_main():
            question_ids = [
                qid for dataset in self.build_dataset("test").datasets
                for qid in dataset.tables.flat_values("question_id")
            ]
            counts = write_vqa_submission(predictions, question_ids, path, fallback_answer=self.answers[0])
            log.info("wrote %s (%d questions)", path, counts["questions"])
        counts = distributed.broadcast_object(counts)
        return {"questions": float(counts["questions"]), "unanswered": float(counts["unanswered"])}

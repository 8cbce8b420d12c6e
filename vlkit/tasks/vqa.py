"""VQAv2 fine-tuning (fact sheet §3.5, §6.1): the ``vqa_classifier`` over the answer vocabulary,
BCE on soft scores, the soft-score metric and the official VQA accuracy, and the test submission.

Data: the Arrow ``vqa`` tables (labels index their answer vocabulary) or ALBEF's json files
(``json_vqa``: labels are positions in ``answer_list``)."""
from __future__ import annotations

import logging
import os
from functools import cached_property
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from vlkit.data.datasets.json_datasets import read_answer_list
from vlkit.data.datasets.vqa import annotations_path, answer_vocabulary, official_answers
from vlkit.eval.metrics import SumMeter, ratio
from vlkit.eval.submission import checkpoint_stem, gather_predictions, write_vqa_submission
from vlkit.eval.vqa_score import soft_score_accuracy, vqa_accuracy
from vlkit.objectives import vqa_loss, vqa_targets
from vlkit.tasks.arrow_task import ArrowTask
from vlkit.utils import distributed
from vlkit.utils.tensors import move_to_device

log = logging.getLogger(__name__)

VQA_DATASETS = ("vqa", "json_vqa")


def vqa_dataset_name(datasets: Any) -> str:
    """The one VQA dataset among ``datasets`` (``vqa`` or ``json_vqa``)."""
    found = [name for name in datasets if name in VQA_DATASETS]
    if len(found) != 1:
        raise ValueError(
            f"VQA reads datasets=['vqa'] (Arrow tables) or datasets=['json_vqa'] (ALBEF's json "
            f"files); got {list(datasets)}"
        )
    return found[0]


def split_question_ids(dataset: Dataset) -> list[int]:
    """The question id of every question of a VQA split (``ConcatSamples``), in sample order."""
    return [qid for part in dataset.datasets for qid in part.question_ids()]


class VQATask(ArrowTask):
    """VQAv2: logits = ``vqa_classifier(cls_feats)`` over ``vqav2_label_size`` answers.

    Validation reports ``score`` (the reference's VQAScore: soft score of the arg-max answer),
    ``vqa_accuracy`` (the official metric on answer strings, when the official annotations of the
    questions are available: see ``vqa_annotations``), ``loss`` and ``chance`` (the best single
    answer's score). ``the_metric`` is ``score``. ``test`` writes the submission file.
    """

    name = "vqa"
    ablation_metrics = ("score", "vqa_accuracy")

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.dataset_name = vqa_dataset_name(cfg.datasets)
        if self.dataset_name == "json_vqa" and len(self.answers) != self.num_answers:
            raise ValueError(
                f"answer_list={cfg.answer_list!r} holds {len(self.answers)} answers but "
                f"vqav2_label_size={cfg.vqav2_label_size}; set vqav2_label_size={len(self.answers)}"
            )

    @cached_property
    def answers(self) -> list[str]:
        """Label → answer string: ``answer_list`` (``json_vqa``) or the Arrow answer vocabulary."""
        if self.dataset_name == "json_vqa":
            return list(read_answer_list(self.cfg.answer_list, self.cfg.data_root))
        return answer_vocabulary(self.cfg.data_root, self.cfg.vqav2_label_size)

    @property
    def num_answers(self) -> int:
        """Labels a prediction chooses from (the classifier's width, ``vqav2_label_size``)."""
        return self.cfg.vqav2_label_size

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

    def predict(self, model: nn.Module, batch: dict, with_loss: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The predicted label of every question (B,) and, with ``with_loss``, the batch's loss
        (a mean over its questions)."""
        logits = self.logits(model, batch).float()
        if not with_loss:
            return logits.argmax(dim=1), None
        targets = vqa_targets(batch["vqa_labels"], batch["vqa_scores"], logits.shape[1], logits.device)
        return logits.argmax(dim=1), vqa_loss(logits, targets)

    def progress(self, loader, split: str):
        """``loader`` behind a progress bar (rank 0, ``progress_bar``)."""
        return tqdm(loader, desc=f"{self.name} {split}", unit="batch", dynamic_ncols=True,
                    disable=not (self.cfg.progress_bar and distributed.is_main()))

    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        device = next(model.parameters()).device
        meter = SumMeter(device)
        for key in ("questions", "score", "loss", "num_skipped_images", "official_questions", "official_accuracy"):
            meter.add(key, 0.0)
        answer_scores = torch.zeros(self.num_answers, dtype=torch.float64, device=device)
        for batch in self.progress(loader, split):
            batch = move_to_device(batch, device)
            predicted, loss = self.predict(model, batch, with_loss=True)
            targets = vqa_targets(batch["vqa_labels"], batch["vqa_scores"], self.num_answers, device)
            meter.add("questions", len(targets))
            meter.add("score", targets.gather(1, predicted[:, None]).sum())
            meter.add("loss", loss * len(targets))
            meter.add("num_skipped_images", batch.get("num_skipped_images", 0))
            answer_scores += targets.sum(dim=0).double()
            if self.human_answers is not None:
                self._add_official(meter, predicted.tolist(), batch["qid"].tolist())
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

    def _add_official(self, meter: SumMeter, labels: list[int], question_ids: list[int]) -> None:
        for label, question_id in zip(labels, question_ids):
            human = self.human_answers.get(question_id)
            if human:
                meter.add("official_questions", 1.0)
                meter.add("official_accuracy", vqa_accuracy(self.answers[label], human, self.cfg.vqa_normalize))

    def submission_path(self, out_dir: str) -> str:
        """Where ``test`` writes: ``{log_dir}/vqa_submit_{checkpoint stem}.json`` (VLC's)."""
        return os.path.join(self.cfg.log_dir, f"vqa_submit_{checkpoint_stem(self.cfg.load_path)}.json")

    def test(self, model: nn.Module, loader, out_dir: str) -> dict[str, float]:
        """Predict every test question and write ``submission_path`` (a list of
        ``{"question_id", "answer"}``, each test question exactly once)."""
        device = next(model.parameters()).device
        local: list[tuple[int, str]] = []
        for batch in self.progress(loader, "test"):
            batch = move_to_device(batch, device)
            labels = self.predict(model, batch, with_loss=False)[0].tolist()
            local += [(qid, self.answers[label]) for qid, label in zip(batch["qid"].tolist(), labels)]
        return self.write_submission(local, self.submission_path(out_dir), split_question_ids)

    def write_submission(self, local: list[tuple[int, str]], path: str,
                         question_ids: Callable[[Dataset], list[int]]) -> dict[str, float]:
        """Gather every rank's ``(question_id, answer)`` pairs and write them to ``path`` on rank 0,
        each test question (``question_ids`` of the test dataset) exactly once; the counts."""
        predictions = gather_predictions(local)
        counts = {"questions": 0, "unanswered": 0}
        if distributed.is_main():
            ids = question_ids(self.build_dataset("test"))
            counts = write_vqa_submission(predictions, ids, path, fallback_answer=self.answers[0])
            log.info("wrote %s (%d questions)", path, counts["questions"])
        counts = distributed.broadcast_object(counts)
        return {"questions": float(counts["questions"]), "unanswered": float(counts["unanswered"])}

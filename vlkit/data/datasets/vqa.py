"""VQAv2 (fact sheet §4.2, §4.4): one sample per question, with soft-score answer targets."""
from __future__ import annotations

from typing import Any

from vlkit.data.datasets.base import ArrowDataset


class VQAv2Dataset(ArrowDataset):
    """VQAv2 questions; train ``vqav2_train`` + ``vqav2_trainable_val``, val ``vqav2_rest_val``
    (1000 held-out val2014 images), test ``vqav2_test``.

    ``use_vgqa=True`` (config key ``vqa_use_vgqa``) adds ``vgqa_train`` to train: the VG-QA
    questions whose answers are in the VQA vocabulary, which VLC's README says it uses but its code
    leaves commented out.

    Extra sample keys: ``vqa_answer`` (answer strings), ``vqa_labels`` (answer ids),
    ``vqa_scores`` (soft scores), all empty on the test split, and ``qid`` (question id).
    """

    name = "vqa"
    text_column = "questions"
    task_columns = ("answers", "answer_labels", "answer_scores", "question_id")
    split_tables = {
        "train": ["vqav2_train", "vqav2_trainable_val"],
        "val": ["vqav2_rest_val"],
        "test": ["vqav2_test"],
    }

    def __init__(self, split: str, *, use_vgqa: bool = False, **options: Any):
        self.use_vgqa = use_vgqa
        super().__init__(split, **options)

    @classmethod
    def config_options(cls, cfg: Any) -> dict[str, Any]:
        return {"use_vgqa": bool(cfg.get("vqa_use_vgqa", False))}

    def table_names(self, split: str) -> list[str]:
        names = super().table_names(split)
        return names + ["vgqa_train"] if self.use_vgqa and split == "train" else names

    def task_fields(self, row: int, slot: int) -> dict[str, Any]:
        def of_question(column: str) -> list:
            values = self.tables.value(column, row) or []
            return values[slot] if slot < len(values) else []

        return {
            "vqa_answer": of_question("answers"),
            "vqa_labels": of_question("answer_labels"),
            "vqa_scores": of_question("answer_scores"),
            "qid": self.tables.value("question_id", row)[slot],
        }

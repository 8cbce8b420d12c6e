"""VQAv2 (fact sheet §4.2, §4.4): one sample per question, with soft-score answer targets."""
from __future__ import annotations

import json
import logging
import os
from typing import Any

from vlkit.data.arrow import ArrowTables
from vlkit.data.datasets.base import ArrowDataset

log = logging.getLogger(__name__)

OFFICIAL_VAL_ANNOTATIONS = "v2_mscoco_val2014_annotations.json"
"""File name of the official VQAv2 validation annotations (the ten human answers per question)."""
UNKNOWN_ANSWER = "unknown"


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

    def question_ids(self) -> list[int]:
        """``question_id`` of every question, in sample order (as ``JsonVqaDataset``'s)."""
        return self.tables.flat_values("question_id")

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


def answer_vocabulary(data_root: str, num_labels: int) -> list[str]:
    """Label → answer string, read from the train and val tables' ``answers`` / ``answer_labels``
    (as the reference's ``VQAv2DataModule``); labels never seen read ``"unknown"``. ``num_labels``
    must be 1 + the largest label (the error names both)."""
    names = VQAv2Dataset.split_tables["train"] + VQAv2Dataset.split_tables["val"]
    tables = ArrowTables(data_root, names, what="the VQAv2 answer vocabulary")
    answers, labels = tables.flat_values("answers", 2), tables.flat_values("answer_labels", 2)
    used = max(labels, default=-1) + 1
    if used != num_labels or min(labels, default=0) < 0:
        raise ValueError(
            f"vqav2_label_size={num_labels} but the answers of the VQAv2 tables in {data_root!r} use "
            f"{used} labels; set vqav2_label_size={used} (or leave it out: it follows the data)"
        )
    vocabulary = [UNKNOWN_ANSWER] * num_labels
    for answer, label in zip(answers, labels):
        vocabulary[label] = answer
    return vocabulary


def official_answers(path: str) -> dict[int, list[str]]:
    """Question id → the human answers, from an official VQA annotations JSON."""
    try:
        with open(path) as handle:
            annotations = json.load(handle)["annotations"]
        return {int(a["question_id"]): [answer["answer"] for answer in a["answers"]] for a in annotations}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"vqa_annotations={path!r} is not an official VQA annotations file ({err}); it must hold "
            f'{{"annotations": [{{"question_id", "answers": [{{"answer"}}, ...]}}, ...]}}'
        ) from err


def annotations_path(cfg: Any) -> str | None:
    """``cfg.vqa_annotations``, else the official file in ``data_root`` if there; None otherwise."""
    if cfg.vqa_annotations:
        if not os.path.isfile(cfg.vqa_annotations):
            raise FileNotFoundError(
                f"vqa_annotations={cfg.vqa_annotations!r}: no such file; give the official "
                f"{OFFICIAL_VAL_ANNOTATIONS} or set vqa_annotations=''"
            )
        return cfg.vqa_annotations
    default = os.path.join(cfg.data_root, OFFICIAL_VAL_ANNOTATIONS)
    return default if os.path.isfile(default) else None

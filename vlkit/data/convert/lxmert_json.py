"""Entries of the LXMERT json formats that CLIP-ViL reads (clipvil.md §4.1-4.3).

* pre-training files: one record per image, ``{"img_id", "sentf": {source: [sentence, ...]},
  "labelf": {question source: [{answer: score}, ...]}}``; vlkit writes caption records
  (``labelf`` empty);
* VQA files: one entry per question, ``{"question_id", "img_id", "sent", "label": {answer: score}}``
  (no ``label`` in test files), with ``trainval_ans2label.json`` / ``trainval_label2ans.json``.

``img_id`` is the COCO file stem (``COCO_train2014_000000318556``) or the Visual Genome id.
"""
from __future__ import annotations

import os


def coco_img_id(file_name: str) -> str:
    """``COCO_val2014_000000391895.jpg`` → ``COCO_val2014_000000391895``."""
    return os.path.splitext(os.path.basename(file_name))[0]


def caption_record(img_id: str, source: str, sentences: list[str]) -> dict:
    """A pre-training record holding captions only (no question labels)."""
    return {"img_id": img_id, "sentf": {source: list(sentences)}, "labelf": {}}


def vqa_entry(question_id: int, img_id: str, question: str, label: dict[str, float] | None) -> dict:
    """One question of a VQA file; ``label=None`` writes the test layout."""
    entry = {"question_id": question_id, "img_id": img_id, "sent": question}
    return entry if label is None else {**entry, "label": label}


def answer_tables(label2ans: list[str]) -> dict[str, object]:
    """``trainval_ans2label.json`` and ``trainval_label2ans.json`` of a vocabulary."""
    return {
        "trainval_ans2label.json": {answer: label for label, answer in enumerate(label2ans)},
        "trainval_label2ans.json": list(label2ans),
    }

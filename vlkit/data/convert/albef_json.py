"""Entries of the ALBEF / GRIT-VLP json formats (grit_albef.md §4.1) for one converted row, built
with ``vlkit.data.json_ann``'s writers so that ``json_ann`` reads them back.

Image paths are relative to ``--root`` (set ``image_root`` / ``vqa_root`` / ``vg_root`` to it),
except for SNLI-VE, whose ``image`` is the Flickr30K id (``image_root`` = the Flickr30K folder).
"""
from __future__ import annotations

from vlkit.data.json_ann import (
    nlvr_entries,
    pretrain_entries,
    retrieval_eval_entries,
    retrieval_train_entries,
    vqa_entry,
)

SNLI_LABEL_NAMES = ("contradiction", "neutral", "entailment")
"""SNLI-VE label names by METER's label id."""


def pretrain(image: str, captions: list[str]) -> list[dict]:
    """One pre-training entry; a single caption is written as a string, several as a list."""
    return pretrain_entries([image], [captions[0] if len(captions) == 1 else list(captions)])


def retrieval_train(image: str, captions: list[str], image_id: object) -> list[dict]:
    """One retrieval-train entry per caption."""
    return retrieval_train_entries([image], [captions], [image_id])


def retrieval_eval(image: str, captions: list[str]) -> list[dict]:
    """One retrieval val / test entry holding every caption."""
    return retrieval_eval_entries([image], [captions])


def vqa(question_id: int, question: str, image: str, dataset: str, answer: str | list[str] | None) -> dict:
    """One VQA entry (``answer=None``: test layout)."""
    return vqa_entry(question_id, question, image, dataset, answer)


def nlvr(images: list[str], sentence: str, label: str) -> dict:
    """One NLVR entry."""
    return nlvr_entries([images], [sentence], [label])[0]


def ve(image_id: str, sentence: str, label: int) -> dict:
    """One visual-entailment entry: the Flickr30K id, the hypothesis and the label's name."""
    return {"image": image_id, "sentence": sentence, "label": SNLI_LABEL_NAMES[label]}

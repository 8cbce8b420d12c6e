"""Submission files: predictions of every process gathered, checked and written once."""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Iterable, Sequence

from vlkit.utils import distributed

log = logging.getLogger(__name__)


def checkpoint_stem(load_path: str) -> str:
    """The file name of ``load_path`` without its extension (the reference's ``model_name``)."""
    if not load_path:
        return "untrained"
    return os.path.splitext(os.path.basename(load_path))[0]


def gather_predictions(local: Iterable[tuple[int, str]]) -> dict[int, str]:
    """Every rank's ``(question_id, answer)`` pairs in one dict; a question answered twice (the same
    sample on two ranks) keeps one answer."""
    merged: dict[int, str] = {}
    for part in distributed.all_gather_object(list(local)):
        for question_id, answer in part:
            merged.setdefault(int(question_id), answer)
    return merged


def write_vqa_submission(
    predictions: dict[int, str], question_ids: Sequence[int], path: str, fallback_answer: str
) -> dict[str, int]:
    """Write ``[{"question_id", "answer"}, ...]`` for every id of ``question_ids`` exactly once, in
    that order; questions without a prediction (their image could not be decoded) get
    ``fallback_answer`` and are counted. Written atomically. Returns the counts."""
    repeated = [qid for qid, count in Counter(question_ids).items() if count > 1]
    if repeated:
        raise ValueError(f"the test split repeats question ids {repeated[:10]}; the data files are damaged")
    missing = [qid for qid in question_ids if qid not in predictions]
    if missing:
        log.warning(
            "%d test questions got no prediction (broken images); answering %r for them: %s",
            len(missing), fallback_answer, missing[:10],
        )
    entries = [{"question_id": int(qid), "answer": predictions.get(qid, fallback_answer)} for qid in question_ids]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w") as handle:
        json.dump(entries, handle, indent=4)
    os.replace(partial, path)
    return {"questions": len(entries), "unanswered": len(missing)}

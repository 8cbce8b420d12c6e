"""LXMERT-format data of CLIP-ViL (fact sheet clipvil.md §4): the pre-training json, the VQA json,
the answer tables and the answer normalisation, and where each ``img_id``'s image file lies.

Pre-training files (``lxmert/{mscoco_train,mscoco_nominival,vgnococo,mscoco_minival}.json``) are
lists of ``{"img_id", "sentf": {source: [sentence, ...]}, "labelf": {source: [{answer: score}, ...]}}``,
``labelf[source][i]`` labelling ``sentf[source][i]``. VQA files (``vqa/{train,nominival,minival,test}
.json``) are lists of ``{"question_id", "img_id", "sent", "label": {answer: score}}`` (no label in test).
A malformed file raises ``LxmertFormatError`` naming the file, the entry and the field.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ANSWER_ALIASES = {"a man": "man", "the man": "man", "a woman": "woman", "the woman": "woman", "grey": "gray",
                  **NUMBER_WORDS}
LEADING_ARTICLES = ("a ", "an ", "the ")
COCO_FOLDERS = ("train2014", "val2014", "test2015")
VG_FOLDER = os.path.join("vg_raw_images", "VG_100K")


class LxmertFormatError(ValueError):
    """An LXMERT json file is missing, not valid json, or holds a malformed entry."""


def normalize_answer(answer: str) -> str:
    """LXMERT's answer normalisation: lower-case; drop one trailing period; strip a leading ``a ``,
    then ``an ``, then ``the ``; then ``a man``/``the man`` → ``man`` (woman likewise), ``one`` ..
    ``ten`` → digits, ``grey`` → ``gray``."""
    answer = answer.lower()
    if answer.endswith("."):
        answer = answer[:-1].strip()
    for article in LEADING_ARTICLES:
        if answer.startswith(article):
            answer = answer[len(article):].strip()
    return ANSWER_ALIASES.get(answer, answer)


def read_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise LxmertFormatError(f"{path}: no such file; check data_root and the split names (train_file/val_file)")
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise LxmertFormatError(f"{path}: not valid json ({err})") from err


@dataclass
class AnswerTable:
    """LXMERT's pre-training answers (``all_ans.json``: ``[{"ans", "dsets"}]``); a position is a label."""

    answers: list[str]
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {answer: label for label, answer in enumerate(self.answers)}

    @classmethod
    def from_file(cls, path: str, qa_sets: Sequence[str] = ()) -> "AnswerTable":
        """The table, keeping only answers whose ``dsets`` meet ``qa_sets`` when given (``--qaSets``)."""
        entries = read_json(path)
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "ans" in e for e in entries):
            raise LxmertFormatError(f"{path}: expected a list of {{'ans', 'dsets'}} objects (LXMERT's all_ans.json)")
        wanted = set(qa_sets)
        return cls([e["ans"] for e in entries if not wanted or wanted & set(e.get("dsets", []))])

    def label(self, answer: str) -> int | None:
        """The label of an answer after normalisation (None: not in the table)."""
        return self.index.get(normalize_answer(answer))


def read_answer_list(path: str) -> list[str]:
    """VQA's ``trainval_label2ans.json`` (a list; position = label)."""
    answers = read_json(path)
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise LxmertFormatError(f"{path}: expected a json list of answer strings (trainval_label2ans.json)")
    return answers


def image_path(img_id: str, image_root: str) -> str:
    """The image of an ``img_id``: COCO ids by the folder their name contains (``COCO_val2014_…`` →
    ``mscoco/val2014/<id>.jpg``), any other id a Visual Genome image (``vg_raw_images/VG_100K``)."""
    for folder in COCO_FOLDERS:
        if folder in img_id:
            return os.path.join(image_root, "mscoco", folder, f"{img_id}.jpg")
    return os.path.join(image_root, VG_FOLDER, f"{img_id}.jpg")


@dataclass(frozen=True)
class Sentence:
    """One (image, sentence) pair of the pre-training data; ``label`` maps table labels to scores."""

    uid: str
    img_id: str
    text: str
    label: dict[int, float] | None


def _list_entries(path: str, what: str) -> Iterator[tuple[str, Any]]:
    """``(where, entry)`` for each entry of a json list file, ``where`` naming the file and position."""
    entries = read_json(path)
    if not isinstance(entries, list):
        raise LxmertFormatError(f"{path}: expected a json list of {what}")
    for position, entry in enumerate(entries):
        yield f"{path}, entry {position}", entry


def _labels(raw: Any, table: AnswerTable | None, where: str) -> dict[int, float]:
    if not isinstance(raw, dict):
        raise LxmertFormatError(f"{where}: a label must be an {{answer: score}} object, got {raw!r}")
    if table is None:
        return {}
    labels: dict[int, float] = {}
    for answer, score in raw.items():
        label = table.label(answer)
        if label is not None:
            labels[label] = float(score)
    return labels


def pretrain_sentences(
    paths: Iterable[str], table: AnswerTable | None, skip_sources: Sequence[str] = ()
) -> list[Sentence]:
    """Every (image, sentence) pair of the files, sources in ``skip_sources`` left out. Answers are
    normalised and kept when in ``table``; ``label`` is None for sentences of an unlabelled
    source (captions)."""
    out = []
    for path in paths:
        for where, entry in _list_entries(path, "per-image entries"):
            if not isinstance(entry, dict) or not isinstance(entry.get("img_id"), str):
                raise LxmertFormatError(f"{where}: needs a string 'img_id'")
            sentf, labelf = entry.get("sentf"), entry.get("labelf", {})
            if not isinstance(sentf, dict) or not isinstance(labelf, dict):
                raise LxmertFormatError(f"{where}: 'sentf' and 'labelf' must be objects of source → list")
            for source, sentences in sentf.items():
                if source in skip_sources:
                    continue
                labels = labelf.get(source)
                if labels is not None and len(labels) != len(sentences):
                    raise LxmertFormatError(f"{where}: labelf[{source!r}] has {len(labels)} labels for "
                                            f"{len(sentences)} sentences")
                for k, text in enumerate(sentences):
                    label = None if labels is None else _labels(labels[k], table, where)
                    out.append(Sentence(f"{entry['img_id']}_{source}_{k:03d}", entry["img_id"], str(text), label))
    return out


@dataclass(frozen=True)
class Question:
    """One VQA question; ``labels`` / ``scores`` hold the answers found in the VQA answer list."""

    question_id: int
    img_id: str
    text: str
    labels: list[int]
    scores: list[float]


def vqa_questions(paths: Iterable[str], answer_index: dict[str, int], require_labels: bool) -> list[Question]:
    """The questions of VQA json files, labels through ``answer_index`` (answers not in it dropped)."""
    out = []
    for path in paths:
        for where, entry in _list_entries(path, "questions"):
            missing = [key for key in ("question_id", "img_id", "sent") if not isinstance(entry, dict) or key not in entry]
            if missing:
                raise LxmertFormatError(f"{where}: missing {missing}")
            label = entry.get("label")
            if label is None and require_labels:
                raise LxmertFormatError(f"{where}: no 'label' in a training/validation file")
            pairs = [(answer_index[a], float(s)) for a, s in (label or {}).items() if a in answer_index]
            out.append(Question(int(entry["question_id"]), entry["img_id"], entry["sent"],
                                [p[0] for p in pairs], [p[1] for p in pairs]))
    return out

"""The ALBEF / GRIT-VLP JSON annotation formats (fact sheet §4.1, §4.3): reading and writing them.

Every file is a JSON list of objects. Reading validates each entry and turns the entries of a
split's files into ``AnnRow`` records (image paths, texts, task fields) that
``vlkit.data.datasets.json_datasets`` samples from; a malformed file or entry raises
``JsonAnnotationError`` naming the file, the entry's position and the field. Writing builds the
entries from plain lists (the synthetic generator uses it).

Formats (``image`` paths are joined to their root when relative):

* pretrain: ``{"image", "caption": str or [str, ...]}``;
* retrieval train: ``{"image", "caption": str, "image_id"}``, one entry per caption;
* retrieval val / test: ``{"image", "caption": [str, ...]}``, one entry per image;
* VQA: ``{"question", "image", "dataset": "vqa" | "vg", "answer", "question_id"}``; ``answer`` is
  the annotators' list for ``vqa`` (root ``vqa_root``), one string for ``vg`` (root ``vg_root``),
  and absent in test files; ``question_id`` is optional except in test files (fact sheet);
* NLVR: ``{"images": [left, right], "sentence", "label": "True" | "False"}``.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

CAPTION_DELETED = str.maketrans("", "", ",.'!?\"()*#:;~")
"""Characters that ``pre_caption`` and ``pre_question`` delete."""
VG_ANSWER_WEIGHT = 0.5
"""Weight of the single answer of a Visual Genome question (the reference's)."""
NLVR_LABELS = {"True": 1, "False": 0, True: 1, False: 0}


class JsonAnnotationError(ValueError):
    """A JSON annotation file is missing, not valid JSON, or holds a malformed entry."""


# --- text pre-processing ---


def _normalised_words(text: str) -> list[str]:
    return text.lower().translate(CAPTION_DELETED).replace("-", " ").replace("/", " ").split()


def pre_caption(caption: str, max_words: int = 30) -> str:
    """Lower-case, delete ``, . ' ! ? " ( ) * # : ; ~``, turn ``-`` and ``/`` into spaces, read
    ``<person>`` as ``person``, collapse whitespace and keep the first ``max_words`` words."""
    return " ".join(word.replace("<person>", "person") for word in _normalised_words(caption)[:max_words])


def pre_question(question: str, max_words: int = 30) -> str:
    """``pre_caption`` without the ``<person>`` rule. Whitespace runs collapse (the reference kept
    inner ones; the tokenizer ignores them)."""
    return " ".join(_normalised_words(question)[:max_words])


# --- reading ---


def as_file_list(value: str | Sequence[str] | None, key: str) -> list[str]:
    """A config key's json files as a list: ALBEF's yaml gives ``val_file`` / ``test_file`` as one
    string, ``train_file`` as a list."""
    if not value:
        return []
    files = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(path, str) and path for path in files):
        raise JsonAnnotationError(f"config key {key}={value!r} must be a json path or a list of json paths")
    return files


def resolve_json_path(path: str, data_root: str, key: str) -> str:
    """``path`` as given (absolute or relative to the current directory), else under ``data_root``."""
    candidates = [path] if os.path.isabs(path) or not data_root else [path, os.path.join(data_root, path)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise JsonAnnotationError(
        f"{key}: json file {path!r} not found (looked at {candidates}); give a path relative to the "
        f"current directory or to data_root, or an absolute one"
    )


def load_json_list(path: str, kind: type = dict) -> list:
    """The items of a JSON list file, each checked to be ``kind`` (an object for annotation files)."""
    try:
        with open(path, encoding="utf-8") as handle:
            items = json.load(handle)
    except OSError as err:
        raise JsonAnnotationError(f"{path}: cannot read the file ({err})") from err
    except ValueError as err:
        raise JsonAnnotationError(f"{path}: not valid JSON ({err}); fix or regenerate the file") from err
    if not isinstance(items, list):
        raise JsonAnnotationError(f"{path}: holds a JSON {type(items).__name__}; expected a JSON list")
    expected = "an object" if kind is dict else f"a {kind.__name__}"
    for position, item in enumerate(items):
        if not isinstance(item, kind):
            raise JsonAnnotationError(f"{path}: entry {position} is {item!r}; every entry must be {expected}")
    return items


@dataclass
class Entry:
    """One annotation object and where it comes from (file index and name, position in the file)."""

    file: int
    path: str
    position: int
    value: dict

    def where(self) -> str:
        return f"{self.path}: entry {self.position}"

    def get(self, name: str) -> Any:
        """Field ``name``; a ``JsonAnnotationError`` naming the entry when it is missing."""
        if name not in self.value:
            raise JsonAnnotationError(
                f"{self.where()} has no field {name!r} (it has {sorted(self.value)}); add it or drop the entry"
            )
        return self.value[name]

    def text(self, name: str) -> str:
        """Field ``name``, which must be a string."""
        value = self.get(name)
        if not isinstance(value, str):
            raise JsonAnnotationError(f"{self.where()}: field {name!r} must be a string, got {value!r}")
        return value

    def texts(self, name: str) -> list[str]:
        """Field ``name``: a string, or a non-empty list of strings."""
        value = self.get(name)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            return value
        raise JsonAnnotationError(
            f"{self.where()}: field {name!r} must be a string or a non-empty list of strings, got {value!r}"
        )


def read_entries(paths: Sequence[str]) -> Iterator[Entry]:
    """Every entry of ``paths``, in order (the lists are concatenated, as the reference)."""
    for index, path in enumerate(paths):
        for position, value in enumerate(load_json_list(path)):
            yield Entry(index, path, position, value)


def image_path(path: str, root: str) -> str:
    """``path`` joined to ``root`` when ``root`` is set and ``path`` is relative; else as is."""
    return os.path.join(root, path) if root else path


@dataclass
class AnnRow:
    """What a dataset samples from: image paths (one per image column), texts and task fields.

    ``origin`` is ``(file index, entry position)`` of the row's first entry, for error messages.
    """

    images: list[str]
    texts: list[str]
    origin: tuple[int, int]
    fields: dict = field(default_factory=dict)


def _row(entry: Entry, images: list[str], texts: list[str], **fields: Any) -> AnnRow:
    return AnnRow(images, texts, (entry.file, entry.position), fields)


def pretrain_rows(entries: Iterator[Entry], image_root: str) -> list[AnnRow]:
    """One row per entry; ``caption`` a string or a list of strings."""
    return [_row(e, [image_path(e.text("image"), image_root)], e.texts("caption")) for e in entries]


def retrieval_train_rows(entries: Iterator[Entry], image_root: str) -> list[AnnRow]:
    """One row per distinct ``image_id`` (first-seen order, so a row's index is its dense image
    id), holding the captions of its entries in file order."""
    rows: dict[Any, AnnRow] = {}
    for entry in entries:
        image_id, caption = entry.get("image_id"), entry.text("caption")
        path = image_path(entry.text("image"), image_root)
        key = json.dumps(image_id)
        if key not in rows:
            rows[key] = _row(entry, [path], [])
        elif rows[key].images[0] != path:
            raise JsonAnnotationError(
                f"{entry.where()}: image_id {image_id!r} names image {path!r}, but an earlier entry gave "
                f"it {rows[key].images[0]!r}; an image_id must name one image"
            )
        rows[key].texts.append(caption)
    return list(rows.values())


def retrieval_eval_rows(entries: Iterator[Entry], image_root: str) -> list[AnnRow]:
    """One row per entry (image) with its list of captions."""
    return [_row(e, [image_path(e.text("image"), image_root)], e.texts("caption")) for e in entries]


def vqa_targets(entry: Entry, answer_ids: dict[str, int], required: bool) -> dict[str, list]:
    """``answers`` / ``labels`` / ``scores`` of a question: each distinct annotator answer weighs
    count / number of answers (``vqa``) or ``VG_ANSWER_WEIGHT`` (``vg``); answers outside
    ``answer_ids`` are dropped from all three. Empty lists for an entry without ``answer`` (test
    files) unless ``required``."""
    if "answer" not in entry.value and not required:
        return {"answers": [], "labels": [], "scores": []}
    if entry.value.get("dataset") == "vg":
        weights = {entry.text("answer"): VG_ANSWER_WEIGHT}
    else:
        raw = entry.texts("answer")
        weights = {answer: count / len(raw) for answer, count in Counter(raw).items()}
    kept = [answer for answer in weights if answer in answer_ids]
    return {"answers": kept, "labels": [answer_ids[a] for a in kept], "scores": [weights[a] for a in kept]}


def vqa_rows(
    entries: Iterator[Entry], roots: dict[str, str], answer_ids: dict[str, int], answers_required: bool
) -> list[AnnRow]:
    """One row per question; ``roots`` maps ``dataset`` (``vqa`` / ``vg``) to its image root.
    ``qid`` is the entry's ``question_id``, else its position in the split's entries."""
    rows = []
    for index, entry in enumerate(entries):
        dataset = entry.text("dataset")
        if dataset not in roots:
            raise JsonAnnotationError(f"{entry.where()}: field 'dataset' is {dataset!r}; expected one of {sorted(roots)}")
        qid = entry.value.get("question_id", index)
        if not isinstance(qid, int) or isinstance(qid, bool):
            raise JsonAnnotationError(f"{entry.where()}: field 'question_id' must be an integer, got {qid!r}")
        targets = vqa_targets(entry, answer_ids, answers_required)
        images = [image_path(entry.text("image"), roots[dataset])]
        rows.append(_row(entry, images, [entry.text("question")], qid=qid, **targets))
    return rows


def nlvr_label(entry: Entry) -> int:
    """1 for ``"True"``, 0 for ``"False"`` (JSON booleans accepted too)."""
    label = entry.get("label")
    if isinstance(label, (str, bool)) and label in NLVR_LABELS:
        return NLVR_LABELS[label]
    raise JsonAnnotationError(f"{entry.where()}: field 'label' must be 'True' or 'False', got {label!r}")


def nlvr_rows(entries: Iterator[Entry], image_root: str) -> list[AnnRow]:
    """One row per statement: the two images, the sentence and ``label`` (1 for ``"True"``)."""
    rows = []
    for entry in entries:
        images = entry.get("images")
        if not (isinstance(images, list) and len(images) == 2 and all(isinstance(p, str) for p in images)):
            raise JsonAnnotationError(f"{entry.where()}: field 'images' must be a list of two paths, got {images!r}")
        paths = [image_path(path, image_root) for path in images]
        rows.append(_row(entry, paths, [entry.text("sentence")], label=nlvr_label(entry)))
    return rows


def load_answer_list(path: str) -> dict[str, int]:
    """``answer_list.json`` (a list of answer strings) as answer → label, in file order."""
    answers = load_json_list(path, str)
    repeated = sorted(answer for answer, count in Counter(answers).items() if count > 1)
    if repeated:
        raise JsonAnnotationError(f"{path}: answers {repeated[:5]} appear more than once; list each answer once")
    return {answer: label for label, answer in enumerate(answers)}


# --- writing ---


def pretrain_entries(images: Sequence[str], captions: Sequence[str | list[str]]) -> list[dict]:
    """Pretrain entries: one per image, with its caption or list of captions."""
    return [{"image": image, "caption": caption} for image, caption in zip(images, captions)]


def retrieval_train_entries(images: Sequence[str], captions: Sequence[list[str]], image_ids: Sequence[Any]) -> list[dict]:
    """Retrieval train entries: one per caption, with the image's id."""
    return [
        {"image": image, "caption": caption, "image_id": image_id}
        for image, texts, image_id in zip(images, captions, image_ids) for caption in texts
    ]


def retrieval_eval_entries(images: Sequence[str], captions: Sequence[list[str]]) -> list[dict]:
    """Retrieval val / test entries: one per image, with its list of captions."""
    return [{"image": image, "caption": list(texts)} for image, texts in zip(images, captions)]


def vqa_entry(question_id: int, question: str, image: str, dataset: str, answer: str | list[str] | None) -> dict:
    """One VQA entry; ``answer=None`` writes the test layout (no ``answer`` field)."""
    entry = {"question_id": question_id, "question": question, "image": image, "dataset": dataset}
    return entry if answer is None else {**entry, "answer": answer}


def nlvr_entries(image_pairs: Sequence[Sequence[str]], sentences: Sequence[str], labels: Sequence[str]) -> list[dict]:
    """NLVR entries: two image paths, a sentence and ``"True"`` / ``"False"``."""
    return [
        {"images": list(pair), "sentence": sentence, "label": label}
        for pair, sentence, label in zip(image_pairs, sentences, labels)
    ]

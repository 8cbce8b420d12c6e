"""VQAv2 (fact sheet §4.2): the official question and annotation json files beside ``train2014/``,
``val2014/`` and ``test2015/`` → ``vqav2_{train,val,trainable_val,rest_val,test,test-dev}``, one row
per image, plus the answer vocabulary (``coco_vqa_label_info.pkl``, ``vqa_answer_vocab.json``).

* Vocabulary: every ``multiple_choice_answer`` of train then val, normalised as the VQA metric
  does (``vlkit.eval.vqa_score.normalize_answer``); answers seen at least ``min_answer_count``
  (9) times, in first-seen order (3129 answers on the official files).
* Soft scores: each distinct human answer of a question that is in the vocabulary scores 0.3,
  0.6, 0.9 or 1.0 for 1, 2, 3, 4+ of the ten annotators. As the reference, the raw answers are
  counted (``normalize_raw_answers=True`` counts them normalised). Train / val questions with no
  such answer are dropped, then images left without a question; the manifest counts both.
* ``rest_val``: ``rest_val_images`` (1000) val images drawn with ``seed`` (the reference took the
  last 1000 rows after an unseeded shuffle); ``trainable_val`` the other val images.
* Test and test-dev rows hold empty answer lists (type ``list<null>``, as the reference's).
"""
from __future__ import annotations

import os
import pickle
from collections import Counter
from typing import Iterable

import numpy as np

from vlkit.data.convert import albef_json, lxmert_json
from vlkit.data.convert.emit import relative_image
from vlkit.data.convert.inputs import RawInputError, RawInputs, field, list_field, load_json
from vlkit.data.convert.jobs import Plan, Row, TableJob
from vlkit.data.convert.pipeline import Converter, Options
from vlkit.data.synthetic import VQA_SCHEMA, VQA_TEST_SCHEMA, vqa_score
from vlkit.eval.vqa_score import normalize_answer

QUESTION_FILES = {
    "train": "v2_OpenEnded_mscoco_train2014_questions.json",
    "val": "v2_OpenEnded_mscoco_val2014_questions.json",
    "test": "v2_OpenEnded_mscoco_test2015_questions.json",
    "test-dev": "v2_OpenEnded_mscoco_test-dev2015_questions.json",
}
ANNOTATION_FILES = {"train": "v2_mscoco_train2014_annotations.json", "val": "v2_mscoco_val2014_annotations.json"}
IMAGE_FOLDERS = {"train": "train2014", "val": "val2014", "test": "test2015", "test-dev": "test2015"}


def load_annotations(path: str) -> list[dict]:
    """The ``annotations`` of an official annotation file, each checked for its fields."""
    annotations = list_field(load_json(path), "annotations", path)
    for position, annotation in enumerate(annotations):
        where = f"{path}: annotations[{position}]"
        for name in ("question_id", "image_id", "multiple_choice_answer"):
            field(annotation, name, where)
        for answer in list_field(annotation, "answers", where):
            field(answer, "answer", f"{where}.answers")
    return annotations


def answer_vocabulary(annotation_lists: Iterable[list[dict]], min_count: int) -> list[str]:
    """Normalised ``multiple_choice_answer``s seen at least ``min_count`` times, first-seen order."""
    counts: Counter[str] = Counter()
    for split_annotations in annotation_lists:
        counts.update(normalize_answer(a["multiple_choice_answer"]) for a in split_annotations)
    return [answer for answer, count in counts.items() if count >= min_count]


def soft_targets(raw_answers: list[str], ans2label: dict[str, int], normalize: bool) -> tuple[list[str], list[int], list[float]]:
    """Vocabulary answers, labels and soft scores of one question (first-seen order)."""
    counts = Counter(normalize_answer(a) for a in raw_answers) if normalize else Counter(raw_answers)
    kept = [answer for answer in counts if answer in ans2label]
    return kept, [ans2label[a] for a in kept], [vqa_score(counts[a]) for a in kept]


def coco_file_name(split: str, image_id: int) -> str:
    """``COCO_train2014_000000000009.jpg`` for image 9 of train."""
    return f"COCO_{IMAGE_FOLDERS[split]}_{image_id:012d}.jpg"


def group_questions(path: str, split: str, annotations: dict[int, dict] | None, ans2label: dict[str, int],
                    normalize: bool) -> tuple[dict[int, list[dict]], dict[str, int]]:
    """Image id → its questions (with their targets), json order; and the split's coverage counts."""
    images: dict[int, list[dict]] = {}
    counts: Counter[str] = Counter()
    for position, question in enumerate(list_field(load_json(path), "questions", path)):
        where = f"{path}: questions[{position}]"
        image_id, question_id = field(question, "image_id", where), field(question, "question_id", where)
        item = {"question": field(question, "question", where), "question_id": question_id}
        counts["questions"] += 1
        if annotations is not None:
            if question_id not in annotations:
                raise RawInputError(f"{where}: question_id {question_id} has no annotation in the {split} annotations")
            raw = [answer["answer"] for answer in annotations[question_id]["answers"]]
            answers, labels, scores = soft_targets(raw, ans2label, normalize)
            counts["human_answers"] += len(raw)
            counts["human_answers_in_vocabulary"] += sum(
                (normalize_answer(a) if normalize else a) in ans2label for a in raw)
            if not labels:
                counts["questions_without_vocabulary_answer"] += 1
                continue
            item |= {"answers": answers, "labels": labels, "scores": scores, "raw": raw}
        counts["questions_kept"] += 1
        images.setdefault(image_id, []).append(item)
    counts["images_kept"] = len(images)
    return images, dict(counts)


def vqa_job(name: str, split: str, column_split: str, images: dict[int, list[dict]], folder: str,
            keep: set[int] | None = None) -> TableJob:
    """One table of ``images`` (those in ``keep`` when given); ``column_split`` fills ``split``."""
    chosen = [image_id for image_id in images if keep is None or image_id in keep]
    annotated = split in ("train", "val")

    def rows():
        for image_id in chosen:
            questions = images[image_id]
            file_name = coco_file_name(split, image_id)
            yield Row(str(image_id), {"image": os.path.join(folder, file_name)}, {
                "questions": [q["question"] for q in questions],
                "answers": [q["answers"] for q in questions] if annotated else [],
                "answer_labels": [q["labels"] for q in questions] if annotated else [],
                "answer_scores": [q["scores"] for q in questions] if annotated else [],
                "image_id": image_id, "question_id": [q["question_id"] for q in questions], "split": column_split,
            }, {"file_name": file_name, "raw": [q.get("raw") for q in questions]})

    return TableJob(name, VQA_SCHEMA if annotated else VQA_TEST_SCHEMA, rows, len(chosen), name)


def rest_val_ids(image_ids: Iterable[int], count: int, seed: int) -> set[int]:
    """``count`` val image ids drawn with ``seed`` from the sorted ids (all when fewer)."""
    ordered = sorted(image_ids)
    chosen = np.random.default_rng(seed).choice(len(ordered), size=min(count, len(ordered)), replace=False)
    return {ordered[i] for i in chosen}


def plan(inputs: RawInputs, options: Options) -> Plan:
    annotations = {split: load_annotations(inputs.file(f"{split}_annotations")) for split in ANNOTATION_FILES}
    label2ans = answer_vocabulary([annotations["train"], annotations["val"]], options.min_answer_count)
    ans2label = {answer: label for label, answer in enumerate(label2ans)}
    folders = {split: inputs.folder(IMAGE_FOLDERS[split]) for split in QUESTION_FILES}
    grouped, coverage = {}, {}
    for split in QUESTION_FILES:
        by_id = {a["question_id"]: a for a in annotations[split]} if split in annotations else None
        grouped[split], coverage[split] = group_questions(
            inputs.file(f"{split}_questions"), split, by_id, ans2label, options.normalize_raw_answers)
    rest = rest_val_ids(grouped["val"], options.rest_val_images, options.seed)
    jobs = [
        vqa_job("vqav2_train", "train", "train", grouped["train"], folders["train"]),
        vqa_job("vqav2_val", "val", "val", grouped["val"], folders["val"]),
        vqa_job("vqav2_trainable_val", "val", "val", grouped["val"], folders["val"], set(grouped["val"]) - rest),
        vqa_job("vqav2_rest_val", "val", "val", grouped["val"], folders["val"], rest),
        vqa_job("vqav2_test", "test", "test", grouped["test"], folders["test"]),
        vqa_job("vqav2_test-dev", "test-dev", "test-dev", grouped["test-dev"], folders["test-dev"]),
    ]
    label_info = {"ans2label": ans2label, "label2ans": label2ans}
    files = {
        "arrow": {"coco_vqa_label_info.pkl": pickle.dumps(label_info, protocol=4), "vqa_answer_vocab.json": ans2label},
        "albef": {"answer_list.json": label2ans},
        "lxmert": {f"vqa/{name}": value for name, value in lxmert_json.answer_tables(label2ans).items()},
    }
    report = {"vqa": {
        "vocabulary_size": len(label2ans), "min_answer_count": options.min_answer_count,
        "normalize_raw_answers": options.normalize_raw_answers, "rest_val_images": len(rest), "seed": options.seed,
        "coverage": coverage,
    }}
    return Plan(jobs, files, report)


ALBEF_FILES = {"vqav2_train": "vqa_train.json", "vqav2_val": "vqa_val.json", "vqav2_test": "vqa_test.json",
               "vqav2_test-dev": "vqa_test_dev.json"}
LXMERT_FILES = {"vqav2_train": "vqa/train.json", "vqav2_trainable_val": "vqa/nominival.json",
                "vqav2_rest_val": "vqa/minival.json", "vqav2_test": "vqa/test.json",
                "vqav2_test-dev": "vqa/testdev.json"}


def albef_entries(job: TableJob, row: Row, root: str):
    """ALBEF ``vqa_{train,val,test,test_dev}.json``: one entry per question, the ten raw answers."""
    if job.name not in ALBEF_FILES:
        return []
    image = relative_image(row.images["image"], root)
    return [(ALBEF_FILES[job.name], albef_json.vqa(qid, question, image, "vqa", raw))
            for qid, question, raw in zip(row.values["question_id"], row.values["questions"], row.extra["raw"])]


def lxmert_entries(job: TableJob, row: Row, root: str):
    """LXMERT ``vqa/{train,nominival,minival,test,testdev}.json`` (nominival = trainable_val, minival =
    rest_val; the whole val is not written): labels are answer → soft score."""
    if job.name not in LXMERT_FILES:
        return []
    img_id = lxmert_json.coco_img_id(row.extra["file_name"])
    values = row.values
    labels = [dict(zip(a, s)) for a, s in zip(values["answers"], values["answer_scores"])] or [None] * len(values["questions"])
    return [(LXMERT_FILES[job.name], lxmert_json.vqa_entry(qid, img_id, question, label))
            for qid, question, label in zip(values["question_id"], values["questions"], labels)]


CONVERTER = Converter(
    name="vqav2",
    summary="VQAv2 (official questions/annotations json + train2014/ val2014/ test2015/)",
    inputs={
        **{f"{split}_questions": name for split, name in QUESTION_FILES.items()},
        **{f"{split}_annotations": name for split, name in ANNOTATION_FILES.items()},
        **{folder: folder for folder in sorted(set(IMAGE_FOLDERS.values()))},
    },
    plan=plan,
    json_formats={"albef": albef_entries, "lxmert": lxmert_entries},
    remember_images=True,
)

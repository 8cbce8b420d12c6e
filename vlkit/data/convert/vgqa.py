"""Visual Genome question answers for VQA training (fact sheet §4.2-4.3) → ``vgqa_train`` (the VQA
columns; one row per VG image).

A question is kept when its VG image has a COCO id (``annotations/image_data.json``), that COCO
image is in VQAv2 train or val (the filter the reference's ``map_vg_mscoco.py`` computes but never
applies), and its normalised answer is in the VQAv2 answer vocabulary, which is rebuilt from the
official VQAv2 annotation files exactly as the ``vqav2`` converter builds it (same
``min_answer_count``). Each kept question has ``answers=[answer]``, its label and score 1.0,
``question_id`` = the VG ``qa_id``, ``image_id`` = the VG image id. The manifest counts the
questions dropped by each rule.
"""
from __future__ import annotations

from collections import Counter

from vlkit.data.convert import albef_json
from vlkit.data.convert.emit import relative_image
from vlkit.data.convert.inputs import RawInputError, RawInputs, field, list_field, load_json
from vlkit.data.convert.jobs import Plan, Row, TableJob
from vlkit.data.convert.pipeline import Converter, Options
from vlkit.data.convert.vg import vg_image_index, vg_image_path
from vlkit.data.convert.vqav2 import ANNOTATION_FILES, answer_vocabulary, load_annotations
from vlkit.data.synthetic import VQA_SCHEMA
from vlkit.eval.vqa_score import normalize_answer


def coco_ids(path: str) -> dict[int, int | None]:
    """VG image id → COCO id (None when the image is not in COCO), from ``image_data.json``."""
    entries = load_json(path)
    if not isinstance(entries, list):
        raise RawInputError(f"{path}: expected a json list of images")
    return {field(e, "image_id", f"{path}: entry {i}"): e.get("coco_id") for i, e in enumerate(entries)}


def plan(inputs: RawInputs, options: Options) -> Plan:
    annotations = [load_annotations(inputs.file(f"vqa_{split}_annotations")) for split in ANNOTATION_FILES]
    label2ans = answer_vocabulary(annotations, options.min_answer_count)
    ans2label = {answer: label for label, answer in enumerate(label2ans)}
    vqa_images = {a["image_id"] for split in annotations for a in split}
    coco_of = coco_ids(inputs.file("image_data"))
    path = inputs.file("question_answers")
    entries = load_json(path)
    if not isinstance(entries, list):
        raise RawInputError(f"{path}: expected a json list of {{id, qas}} objects")
    counts: Counter[str] = Counter()
    images: dict[int, list[dict]] = {}
    for position, entry in enumerate(entries):
        for qa in list_field(entry, "qas", f"{path}: entry {position}"):
            where = f"{path}: entry {position} qa"
            image_id = field(qa, "image_id", where)
            answer = normalize_answer(field(qa, "answer", where))
            counts["questions"] += 1
            coco_id = coco_of.get(image_id)
            if coco_id is None:
                counts["dropped_image_not_in_coco"] += 1
            elif coco_id not in vqa_images:
                counts["dropped_image_not_in_vqav2_trainval"] += 1
            elif answer not in ans2label:
                counts["dropped_answer_not_in_vocabulary"] += 1
            else:
                counts["questions_kept"] += 1
                images.setdefault(image_id, []).append(
                    {"question": field(qa, "question", where), "qa_id": field(qa, "qa_id", where), "answer": answer})
    folder = inputs.folder("images")
    index = vg_image_index(folder)

    def rows():
        for image_id, questions in images.items():
            yield Row(str(image_id), {"image": vg_image_path(index, folder, image_id)}, {
                "questions": [q["question"] for q in questions],
                "answers": [[q["answer"]] for q in questions],
                "answer_labels": [[ans2label[q["answer"]]] for q in questions],
                "answer_scores": [[1.0] for _ in questions],
                "image_id": image_id, "question_id": [q["qa_id"] for q in questions], "split": "train",
            })

    job = TableJob("vgqa_train", VQA_SCHEMA, rows, len(images), "train")
    report = {"vgqa": {**counts, "vocabulary_size": len(label2ans), "images_kept": len(images)}}
    return Plan([job], {"albef": {"answer_list.json": label2ans}}, report)


def albef_entries(job: TableJob, row: Row, root: str):
    """ALBEF ``vg_qa.json``: one entry per question, dataset ``vg``, the answer as one string."""
    image = relative_image(row.images["image"], root)
    values = row.values
    return [("vg_qa.json", albef_json.vqa(qid, question, image, "vg", answers[0]))
            for qid, question, answers in zip(values["question_id"], values["questions"], values["answers"])]


CONVERTER = Converter(
    name="vgqa",
    summary="Visual Genome QA filtered to COCO images of VQAv2 and the VQAv2 vocabulary",
    inputs={
        "question_answers": "annotations/question_answers.json", "image_data": "annotations/image_data.json",
        "images": "images", **{f"vqa_{split}_annotations": name for split, name in ANNOTATION_FILES.items()},
    },
    plan=plan,
    json_formats={"albef": albef_entries},
)

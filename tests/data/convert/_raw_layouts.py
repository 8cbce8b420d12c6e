"""Tiny raw datasets in their official layouts (real field names and nesting), for the converters.

Every image is a small generated JPEG (PNG for NLVR2); each dataset has at least one image that
is missing and one whose bytes are not an image (``CORRUPT``). What each layout holds is spelt out
next to its builder, so the tests can state their expectations by hand.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image

CORRUPT = b"\xff\xd8\xff\xe0 this is not a jpeg at all"


def image_bytes(key: int, size: int = 16, fmt: str = "JPEG", noise: bool = False) -> bytes:
    if noise:
        pixels = np.random.default_rng(key).integers(0, 256, (size, size, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", (size, size), (37 * key % 256, 91 * key % 256, 173 * key % 256))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def put(path: str, data: bytes | str | object) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, bytes):
        with open(path, "wb") as handle:
            handle.write(data)
    elif isinstance(data, str):
        with open(path, "w") as handle:
            handle.write(data)
    else:
        with open(path, "w") as handle:
            json.dump(data, handle)


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# --- COCO: Karpathy json + train2014 / val2014 / test2015, and the VQAv2 files on the same images ---

COCO_TRAIN_IDS = (9, 25, 30, 34)
"""train2014 images; 34 is missing on disk."""
COCO_VAL_IDS = (42, 73, 74)
"""val2014 images; 74 is corrupt."""
COCO_TEST_IDS = (1, 2)
MISSING_COCO = "COCO_train2014_000000000034.jpg"
CORRUPT_COCO = "COCO_val2014_000000000074.jpg"


def coco_name(folder: str, image_id: int) -> str:
    return f"COCO_{folder}_{image_id:012d}.jpg"


def write_coco_images(root: str) -> None:
    for folder, ids in (("train2014", COCO_TRAIN_IDS), ("val2014", COCO_VAL_IDS), ("test2015", COCO_TEST_IDS)):
        for image_id in ids:
            name = coco_name(folder, image_id)
            if name == MISSING_COCO:
                continue
            put(os.path.join(root, folder, name), CORRUPT if name == CORRUPT_COCO else image_bytes(image_id))


KARPATHY_SPLITS = {9: "train", 25: "train", 30: "restval", 34: "train", 42: "val", 73: "test", 74: "test"}


def karpathy_coco() -> dict:
    images = []
    for position, (image_id, split) in enumerate(KARPATHY_SPLITS.items()):
        folder = "train2014" if image_id in COCO_TRAIN_IDS else "val2014"
        images.append({
            "filepath": folder, "filename": coco_name(folder, image_id), "imgid": position, "split": split,
            "cocoid": image_id, "sentids": [10 * position, 10 * position + 1],
            "sentences": [
                {"tokens": ["a", "dog"], "raw": f"A dog number {image_id}.", "imgid": position, "sentid": 10 * position},
                {"tokens": ["a", "cat"], "raw": f"A cat near {image_id}.", "imgid": position, "sentid": 10 * position + 1},
            ],
        })
    return {"images": images, "dataset": "coco"}


# VQAv2. Vocabulary with min_answer_count=3, from the multiple-choice answers of train then val,
# normalised: yes (3: "yes", "Yes.", "yes"), 2 (3: "two", "2", "2"), no (3) → ["yes", "2", "no"];
# red (2), blue (1) stay out.
VQA_VOCAB = ["yes", "2", "no"]
TEN = {
    "mixed": ["yes"] * 4 + ["no"] * 2 + ["Yes"] + ["2"] * 3,  # raw: yes 1.0, no 0.6, 2 0.9 ("Yes" is not in it)
    "yes": ["yes"] * 10,
    "two": ["two"] * 7 + ["2"] * 1 + ["blue"] * 2,  # raw: only "2" (once) → 0.3; normalised: 2 → 1.0
    "no": ["no"] * 3 + ["red"] * 7,  # no 0.9
    "red": ["red"] * 10,  # no vocabulary answer: the question is dropped
    "blue": ["blue"] * 9 + ["no"],  # no 0.3
}
VQA_QUESTIONS = {
    # split: [(question_id, image_id, question, multiple_choice_answer, ten answers key)]
    "train": [
        (90, 9, "is it a dog?", "yes", "mixed"),
        (91, 9, "how many cats?", "two", "two"),
        (250, 25, "is it red?", "Yes.", "yes"),
        (251, 25, "what color?", "red", "red"),
        (300, 30, "is it blue?", "no", "no"),
        (340, 34, "how many?", "2", "two"),
        (341, 34, "what color is it?", "blue", "blue"),
    ],
    "val": [
        (420, 42, "is this a cat?", "yes", "yes"),
        (421, 42, "how many dogs?", "2", "two"),
        (730, 73, "any red?", "no", "no"),
        (731, 73, "what colour?", "red", "red"),
        (740, 74, "is it big?", "no", "mixed"),
        (741, 74, "is it small?", "no", "blue"),
    ],
}
VQA_TEST_QUESTIONS = {"test": [(10, 1, "what is it?"), (11, 1, "where?"), (20, 2, "why?")], "test-dev": [(10, 1, "what is it?")]}


def vqa_files(root: str) -> None:
    for split, questions in VQA_QUESTIONS.items():
        put(os.path.join(root, f"v2_OpenEnded_mscoco_{split}2014_questions.json"), {
            "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": f"{split}2014",
            "questions": [{"image_id": i, "question": q, "question_id": qid} for qid, i, q, _, _ in questions],
        })
        put(os.path.join(root, f"v2_mscoco_{split}2014_annotations.json"), {
            "info": {}, "license": {}, "data_subtype": f"{split}2014",
            "annotations": [{
                "question_type": "is the", "multiple_choice_answer": mc, "image_id": i, "answer_type": "yes/no",
                "question_id": qid,
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(TEN[ten])],
            } for qid, i, _, mc, ten in questions],
        })
    for split, questions in VQA_TEST_QUESTIONS.items():
        put(os.path.join(root, f"v2_OpenEnded_mscoco_{split}2015_questions.json"), {
            "questions": [{"image_id": i, "question": q, "question_id": qid} for qid, i, q in questions],
        })


def write_coco_root(root: str) -> str:
    write_coco_images(root)
    put(os.path.join(root, "karpathy", "dataset_coco.json"), karpathy_coco())
    vqa_files(root)
    return root


# --- Flickr30K: Karpathy json + flickr30k-images (1003 missing, 1004 corrupt) ---

F30K_SPLITS = {1001: "train", 1002: "train", 1003: "val", 1004: "test", 1005: "test"}


def write_f30k_root(root: str) -> str:
    images = [{"filename": f"{i}.jpg", "imgid": k, "split": split,
               "sentences": [{"raw": f"Person {i} rides.", "tokens": ["person"]}]}
              for k, (i, split) in enumerate(F30K_SPLITS.items())]
    put(os.path.join(root, "karpathy", "dataset_flickr30k.json"), {"images": images, "dataset": "flickr30k"})
    for i in F30K_SPLITS:
        if i != 1003:
            put(os.path.join(root, "flickr30k-images", f"{i}.jpg"), CORRUPT if i == 1004 else image_bytes(i))
    return root


# --- Visual Genome: regions, image data, question answers; images in VG_100K and VG_100K_2 ---
# Images 1 (VG_100K), 2 (VG_100K_2), 3 missing, 4 corrupt, 5 has no region; coco ids: 1→9 (in
# VQAv2 train), 2→42 (val), 3→None, 4→73, 6→999 (not in VQAv2).

VG_COCO = {1: 9, 2: 42, 3: None, 4: 73, 5: None, 6: 999}


def region(image_id: int, k: int, phrase: str) -> dict:
    return {"region_id": 100 * image_id + k, "image_id": image_id, "phrase": phrase,
            "x": k, "y": 2 * k, "width": 10 + k, "height": 5 + k}


def write_vg_root(root: str) -> str:
    regions = [
        {"id": 1, "regions": [region(1, 0, "a red ball"), region(1, 1, "green grass")]},
        {"id": 2, "regions": [region(2, 0, "a tall man")]},
        {"id": 3, "regions": [region(3, 0, "sky")]},
        {"id": 4, "regions": [region(4, 0, "a car")]},
        {"id": 5, "regions": []},
    ]
    put(os.path.join(root, "annotations", "region_descriptions.json"), regions)
    put(os.path.join(root, "annotations", "image_data.json"), [
        {"image_id": i, "coco_id": c, "flickr_id": None, "width": 16, "height": 16,
         "url": f"https://cs.stanford.edu/people/rak248/VG_100K/{i}.jpg"} for i, c in VG_COCO.items()])
    qas = {
        1: [("What is red?", "The ball.", 11), ("Is it yes?", "Yes.", 12), ("How many?", "Two", 13)],
        2: [("Is he tall?", "yes", 21)],
        3: [("Any?", "no", 31)],
        4: [("Is it a car?", "no", 41)],
        6: [("What?", "yes", 61)],
    }
    put(os.path.join(root, "annotations", "question_answers.json"), [
        {"id": i, "qas": [{"a_objects": [], "question": q, "image_id": i, "qa_id": qa, "answer": a, "q_objects": []}
                          for q, a, qa in items]} for i, items in qas.items()])
    put(os.path.join(root, "images", "VG_100K", "1.jpg"), image_bytes(1))
    put(os.path.join(root, "images", "VG_100K_2", "2.jpg"), image_bytes(2))
    put(os.path.join(root, "images", "VG_100K", "4.jpg"), CORRUPT)
    put(os.path.join(root, "images", "VG_100K", "5.jpg"), image_bytes(5))
    return root


# --- SBU / CC3M: [path, caption] lists, images one folder down ---


def write_pairs_root(root: str, annot: str, image_dir: str, count: int, missing: int, corrupt: int,
                     noise_size: int = 0) -> str:
    """``count`` pairs ``img_{k}.jpg``; ``missing`` absent on disk, ``corrupt`` not an image."""
    pairs = []
    for k in range(count):
        name = f"img_{k:05d}.jpg"
        pairs.append([f"http://example.com/{k}/{name}", f"caption number {k}"])
        if k == missing:
            continue
        data = CORRUPT if k == corrupt else image_bytes(k, size=noise_size or 16, noise=bool(noise_size))
        put(os.path.join(root, image_dir, f"{k // 4:04d}", name), data)
    put(os.path.join(root, annot), pairs)
    return root


def write_cc3m_tsv_root(root: str) -> str:
    """val as the official tsv: line i is image ``i`` (0 present, 1 missing, 2 present as 000002.png)."""
    put(os.path.join(root, "Validation_GCC-1.1.0-Validation.tsv"),
        "a photo of a dog\thttp://x/0.jpg\nthe sea\thttp://x/1.jpg\nsunset over hills\thttp://x/2.jpg\n")
    put(os.path.join(root, "images_val", "00000", "0.jpg"), image_bytes(0))
    put(os.path.join(root, "images_val", "00000", "000002.png"), image_bytes(2, fmt="PNG"))
    return root


# --- NLVR2: json-lines per split, pair images ---


def nlvr_line(identifier: str, sentence: str, label: str, directory: int | None = None) -> dict:
    record = {"validation": {}, "sentence": sentence, "left_url": "http://l", "writer": "w1", "label": label,
              "right_url": "http://r", "synset": "dog", "query": "dogs", "identifier": identifier,
              "extra_validations": {}}
    return record if directory is None else {**record, "directory": directory}


def write_nlvr2_root(root: str) -> str:
    """train: pairs train-1-0 (2 statements, dir 3) and train-2-1 (img1 missing, dir 5);
    dev: dev-7-0 (corrupt img0) and dev-8-0; test1: test1-3-0. No balanced/unbalanced files."""
    data = os.path.join(root, "nlvr2", "data")
    put(os.path.join(data, "train.json"), jsonl([
        nlvr_line("train-1-0-0", "Two dogs.", "True", 3), nlvr_line("train-1-0-1", "No dog.", "False", 3),
        nlvr_line("train-2-1-0", "A cat.", "True", 5)]))
    put(os.path.join(data, "dev.json"), jsonl([nlvr_line("dev-7-0-0", "One bird.", "False"),
                                              nlvr_line("dev-8-0-0", "Three birds.", "True")]))
    put(os.path.join(data, "test1.json"), jsonl([nlvr_line("test1-3-0-0", "A horse.", "True")]))
    for k in range(2):
        put(os.path.join(root, "images", "train", "3", f"train-1-0-img{k}.png"), image_bytes(10 + k, fmt="PNG"))
        put(os.path.join(root, "dev", f"dev-8-0-img{k}.png"), image_bytes(30 + k, fmt="PNG"))
        put(os.path.join(root, "test1", f"test1-3-0-img{k}.png"), image_bytes(40 + k, fmt="PNG"))
    put(os.path.join(root, "images", "train", "5", "train-2-1-img0.png"), image_bytes(20, fmt="PNG"))
    put(os.path.join(root, "dev", "dev-7-0-img0.png"), CORRUPT)
    put(os.path.join(root, "dev", "dev-7-0-img1.png"), image_bytes(31, fmt="PNG"))
    return root


# --- SNLI-VE: jsonl + Flickr30K/images ---


def snli_line(image_id: str, premise: str, hypothesis: str, gold: str) -> dict:
    return {"Flickr30K_ID": image_id, "sentence1": premise, "sentence2": hypothesis, "gold_label": gold,
            "annotator_labels": [gold], "pairID": f"{image_id}.jpg#0r1n", "captionID": f"{image_id}.jpg#0",
            "sentence1_binary_parse": "( x )", "sentence2_parse": "(ROOT x)"}


def write_snli_root(root: str) -> str:
    """train: image 11 (2 hypotheses), 12 (missing) and a "-" line; dev: 13 (corrupt), 14; test: 15."""
    put(os.path.join(root, "snli_ve_train.jsonl"), jsonl([
        snli_line("11", "A man rides.", "A person rides.", "entailment"),
        snli_line("11", "A man rides.", "A woman sleeps.", "contradiction"),
        snli_line("12", "Kids play.", "Kids are outside.", "neutral"),
        snli_line("11", "A man rides.", "Someone moves.", "-"),
    ]))
    put(os.path.join(root, "snli_ve_dev.jsonl"), jsonl([
        snli_line("13", "A dog runs.", "An animal runs.", "entailment"),
        snli_line("14", "Two cats.", "Cats sleep.", "neutral")]))
    put(os.path.join(root, "snli_ve_test.jsonl"), jsonl([snli_line("15", "A boat.", "A ship sails.", "neutral")]))
    for i in (11, 14, 15):
        put(os.path.join(root, "Flickr30K", "images", f"{i}.jpg"), image_bytes(i))
    put(os.path.join(root, "Flickr30K", "images", "13.jpg"), CORRUPT)
    return root


# --- ImageFolder ---


def write_imagefolder_root(root: str) -> str:
    """train: 2 classes x 2 images, one of cat's corrupt; val: 1 image per class."""
    for split, count in (("train", 2), ("val", 1)):
        for c, name in enumerate(("cat", "dog")):
            for k in range(count):
                data = CORRUPT if (split, name, k) == ("train", "cat", 1) else image_bytes(10 * c + k)
                put(os.path.join(root, split, name, f"{k}.jpg"), data)
    return root

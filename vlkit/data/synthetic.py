"""A small compositional synthetic dataset in every Arrow file the ViLT / VLC / METER datasets read.

``write_synthetic(out_dir)`` renders ``num_images`` scenes of coloured shapes once
(``vlkit.data.synthetic_scenes``) and writes, with the reference writers' file names and columns
(vilt_vlc.md §4.1-4.2, §4.4; meter_elip.md §4.1):

* captions: ``coco_caption_karpathy_{train,restval,val,test}``, ``f30k_caption_karpathy_{train,val,test}``,
  ``vg``, ``sbu_0..8``, ``conceptual_caption_train_0..30``, ``conceptual_caption_val_0``;
* VQA: ``vqav2_{train,val,trainable_val,rest_val,test,test-dev}``, ``vgqa_train``;
* ``nlvr2_{train,dev,test1}`` and ``snli_{train,dev,test}``;
* ``coco_vqa_label_info.pkl`` (VLC's ``ans2label`` / ``label2ans``) and ``vqa_answer_vocab.json``;
* ``v2_mscoco_val2014_annotations.json``: the ten raw answers of every val question, in the official
  format, for the official VQA accuracy;
* ``tokenizer/``: a BERT-style WordPiece tokenizer whose vocabulary holds every word of every text;
* ``scenes.json``: each image's scene and the image(s) behind every row of every file;
* the ALBEF / GRIT-VLP json formats (``vlkit.data.json_ann``), with image paths relative to
  ``out_dir`` (so ``image_root`` = ``vqa_root`` = ``vg_root`` = ``out_dir``): ``images/*.jpg`` (every
  scene), ``json_pretrain/pretrain.json`` (COCO train + restval caption lists, SBU single captions),
  ``downstream_json/coco_{train,val,test}.json``, ``vqa_{train,val,test}.json`` + ``vg_qa.json`` +
  ``answer_list.json``, and ``nlvr_{train,dev,test}.json``, each from the Arrow file of the same data;
* ``imagefolder/{train,val}/{color}_{kind}/*.jpg``: an ImageFolder tree for image classification
  (``main_finetune.py``), one class per shape (6 colours x 3 kinds = 18 classes), one shape per
  image at a random place and size; ``num_images`` training and ``max(18, num_images // 4)``
  validation images, classes balanced;
* ``clipvil/``: CLIP-ViL's LXMERT-format json and image folders (``vlkit.data.synthetic_lxmert``);
* ``synth_info.json``: the summary that ``write_synthetic`` returns.

The images are split once into train / val / test pools; training files of every dataset use only
train images and evaluation files only val or test images, so no evaluation image is seen in any
training file. Files that would be empty for a small pool reuse its images. The same arguments
give byte-identical files; every file is written under a temporary name and then renamed.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertTokenizerFast

from vlkit.data.datasets.vqa import OFFICIAL_VAL_ANNOTATIONS
from vlkit.data.json_ann import (
    nlvr_entries,
    pretrain_entries,
    retrieval_eval_entries,
    retrieval_train_entries,
    vqa_entry,
)

from vlkit.data.synthetic_lxmert import write_lxmert
from vlkit.data.synthetic_scenes import (
    ANSWERS,
    BACKGROUND,
    COLORS,
    KINDS,
    QA,
    Scene,
    captions,
    draw_kind,
    hypothesis,
    nlvr2_example,
    noisy_jpeg,
    questions,
    region_phrases,
    render,
    sample_scene,
    shape_box,
    ten_answers,
)

MIN_POOL_IMAGES = 4
"""Images at least in each of the train, val and test pools (two-row files need two images each)."""
MIN_IMAGES = 3 * MIN_POOL_IMAGES
MIN_IMAGE_SIZE = 24
EVAL_FRACTION = 0.15
"""Share of the images in each of the val and test pools."""
CAPTIONS_PER_IMAGE = 5
QUESTIONS_PER_IMAGE = 4
VGQA_QUESTIONS_PER_IMAGE = 2
VGQA_QUESTION_ID_OFFSET = 10**8
SBU_SHARDS = 9
GCC_TRAIN_SHARDS = 31
TOKENIZER_VOCAB_SIZE = 1000
"""Upper bound on the tokenizer's vocabulary (the texts need about 200 tokens)."""
BASE_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'-"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ANS2LABEL = {answer: label for label, answer in enumerate(ANSWERS)}
VQA_SCORE_BY_COUNT = (0.0, 0.3, 0.6, 0.9)
"""Soft score of an answer given by 0-3 of the 10 annotators; 4 or more give 1.0."""
TEXT_COLUMNS = ("caption", "questions", "answers", "sentences")

_TEXTS = pa.list_(pa.string())
_INTS = pa.list_(pa.int64())
CAPTION_SCHEMA = pa.schema([
    ("image", pa.binary()), ("caption", _TEXTS), ("image_id", pa.string()), ("split", pa.string()),
])
VG_SCHEMA = pa.schema([
    ("image", pa.binary()), ("caption", _TEXTS), ("width", _INTS), ("height", _INTS), ("x", _INTS), ("y", _INTS),
    ("image_id", pa.string()),
])


def _vqa_schema(answer_item: pa.DataType, label_item: pa.DataType, score_item: pa.DataType) -> pa.Schema:
    return pa.schema([
        ("image", pa.binary()), ("questions", _TEXTS), ("answers", pa.list_(answer_item)),
        ("answer_labels", pa.list_(label_item)), ("answer_scores", pa.list_(score_item)),
        ("image_id", pa.int64()), ("question_id", _INTS), ("split", pa.string()),
    ])


VQA_SCHEMA = _vqa_schema(_TEXTS, _INTS, pa.list_(pa.float64()))
VQA_TEST_SCHEMA = _vqa_schema(pa.null(), pa.null(), pa.null())
"""Test files hold empty answer lists, which the reference's pandas conversion types as list<null>."""
NLVR2_SCHEMA = pa.schema([
    ("image_0", pa.binary()), ("image_1", pa.binary()), ("questions", _TEXTS), ("answers", _TEXTS),
    ("identifier", pa.string()),
])
SNLI_SCHEMA = pa.schema([("image", pa.binary()), ("sentences", pa.list_(_TEXTS)), ("labels", _INTS)])


FORMAT_VERSION = 6
"""Bumped whenever the files written change, so a stale synthetic set is regenerated, not reused."""


@dataclass
class ArrowFile:
    """One table to write: its name, schema, columns and the image index (or pair) of each row."""

    name: str
    schema: pa.Schema
    columns: dict[str, list]
    images: list
    annotations: list | None = None
    """VQA files: the official-format annotation of every question (the ten raw answers)."""

    def rows(self, start: int, stop: int, name: str, split: str) -> "ArrowFile":
        """Rows ``start:stop`` as a file ``name`` whose ``split`` column says ``split``."""
        columns = {key: values[start:stop] for key, values in self.columns.items()}
        columns["split"] = [split] * len(columns["split"])
        return ArrowFile(name, self.schema, columns, self.images[start:stop])


@dataclass(frozen=True)
class Corpus:
    """The rendered images and their scenes, split into train / val / test pools."""

    seed: int
    scenes: list[Scene]
    images: list[bytes]
    image_size: int
    pools: dict[str, list[int]]

    def rng(self, name: str) -> np.random.Generator:
        """A generator of its own for the file ``name`` (stable across Python processes)."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])


# --- arguments and pools ---


def _check_arguments(out_dir: str, num_images: int, seed: int, image_size: int) -> None:
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise ValueError(f"out_dir must be a non-empty path, got {out_dir!r}")
    for name, value in (("num_images", num_images), ("seed", seed), ("image_size", image_size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if num_images < MIN_IMAGES:
        raise ValueError(
            f"num_images={num_images} is too small: train, val and test need {MIN_POOL_IMAGES} images "
            f"each, so the minimum is {MIN_IMAGES}"
        )
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size={image_size} is too small for the shapes to be visible; the minimum is {MIN_IMAGE_SIZE}"
        )


def split_pools(num_images: int, rng: np.random.Generator) -> dict[str, list[int]]:
    """Disjoint train / val / test image indices; val and test get ``EVAL_FRACTION`` each."""
    order = [int(i) for i in rng.permutation(num_images)]
    n_eval = max(MIN_POOL_IMAGES, int(num_images * EVAL_FRACTION))
    return {"train": order[2 * n_eval:], "val": order[:n_eval], "test": order[n_eval:2 * n_eval]}


def shards(pool: list[int], count: int) -> list[list[int]]:
    """``pool`` dealt round-robin into ``count`` shards; a shard left empty gets one image again."""
    return [pool[k::count] or [pool[k % len(pool)]] for k in range(count)]


def build_corpus(num_images: int, seed: int, image_size: int) -> Corpus:
    """Sample and render every scene once."""
    scene_rng, pixel_rng, split_rng = (np.random.default_rng([seed, stream]) for stream in range(3))
    scenes = [sample_scene(scene_rng) for _ in range(num_images)]
    images = [render(scene, image_size, pixel_rng) for scene in scenes]
    return Corpus(seed, scenes, images, image_size, split_pools(num_images, split_rng))


# --- caption files ---


def caption_file(
    corpus: Corpus, name: str, rows: list[int], split: str, per_image: int, image_id: Callable[[int], str]
) -> ArrowFile:
    """``image, caption, image_id, split`` with ``per_image`` distinct captions per image."""
    rng = corpus.rng(name)
    return ArrowFile(name, CAPTION_SCHEMA, {
        "image": [corpus.images[i] for i in rows],
        "caption": [captions(corpus.scenes[i], rng, per_image) for i in rows],
        "image_id": [image_id(i) for i in rows],
        "split": [split] * len(rows),
    }, list(rows))


def vg_file(corpus: Corpus, rows: list[int]) -> ArrowFile:
    """``vg``: two region phrases per shape, each with the shape's box."""
    columns: dict[str, list] = {key: [] for key in VG_SCHEMA.names}
    for i in rows:
        regions = [(phrase, shape_box(shape, corpus.image_size))
                   for shape in corpus.scenes[i].shapes for phrase in region_phrases(shape)]
        columns["image"].append(corpus.images[i])
        columns["caption"].append([phrase for phrase, _ in regions])
        for k, key in enumerate(("x", "y", "width", "height")):
            columns[key].append([box[k] for _, box in regions])
        columns["image_id"].append(str(i))
    return ArrowFile("vg", VG_SCHEMA, columns, list(rows))


def caption_files(corpus: Corpus) -> list[ArrowFile]:
    """COCO and F30K Karpathy splits, VG, SBU shards and GCC shards."""
    train, val, test = corpus.pools["train"], corpus.pools["val"], corpus.pools["test"]
    n_restval = max(1, len(train) // 6)

    def coco(i: int) -> str:
        return f"SYNTH_{i:012d}.jpg"

    def f30k(i: int) -> str:
        return f"{i}.jpg"

    files = [
        caption_file(corpus, "coco_caption_karpathy_train", train[n_restval:], "train", CAPTIONS_PER_IMAGE, coco),
        caption_file(corpus, "coco_caption_karpathy_restval", train[:n_restval], "restval", CAPTIONS_PER_IMAGE, coco),
        caption_file(corpus, "coco_caption_karpathy_val", val, "val", CAPTIONS_PER_IMAGE, coco),
        caption_file(corpus, "coco_caption_karpathy_test", test, "test", CAPTIONS_PER_IMAGE, coco),
    ]
    files += [
        caption_file(corpus, f"f30k_caption_karpathy_{split}", corpus.pools[split], split, CAPTIONS_PER_IMAGE, f30k)
        for split in ("train", "val", "test")
    ]
    files.append(vg_file(corpus, train))
    files += [caption_file(corpus, f"sbu_{k}", rows, "train", 1, lambda i: f"sbu_{i:08d}.jpg")
              for k, rows in enumerate(shards(train, SBU_SHARDS))]
    files += [caption_file(corpus, f"conceptual_caption_train_{k}", rows, "train", 1, lambda i: f"gcc_{i:08d}.jpg")
              for k, rows in enumerate(shards(train, GCC_TRAIN_SHARDS))]
    files.append(caption_file(corpus, "conceptual_caption_val_0", val, "val", 1, lambda i: f"gcc_{i:08d}.jpg"))
    return files


# --- VQA files ---


def vqa_score(count: int) -> float:
    """The reference's soft score of an answer given by ``count`` of the 10 annotators."""
    return VQA_SCORE_BY_COUNT[count] if count < len(VQA_SCORE_BY_COUNT) else 1.0


def score_answers(raw_answers: Sequence[str]) -> tuple[list[str], list[int], list[float]]:
    """Vocabulary answers, labels and soft scores from the raw annotator answers (first-seen order)."""
    counts = Counter(raw_answers)
    kept = [answer for answer in counts if answer in ANS2LABEL]
    return kept, [ANS2LABEL[a] for a in kept], [vqa_score(counts[a]) for a in kept]


def _soft_targets(qa: QA, rng: np.random.Generator) -> tuple[list[str], list[int], list[float], list[str]]:
    raw = ten_answers(qa, rng)
    return (*score_answers(raw), raw)


def _single_target(qa: QA, rng: np.random.Generator) -> tuple[list[str], list[int], list[float], list[str]]:
    return [qa.answer], [ANS2LABEL[qa.answer]], [1.0], [qa.answer]


def vqa_file(
    corpus: Corpus,
    name: str,
    rows: list[int],
    split: str,
    per_image: int = QUESTIONS_PER_IMAGE,
    targets: Callable[[QA, np.random.Generator], tuple] | None = _soft_targets,
    question_id_offset: int = 0,
) -> ArrowFile:
    """VQA columns for ``rows``; ``targets=None`` writes the test layout (empty answer lists)."""
    rng = corpus.rng(name)
    columns: dict[str, list] = {key: [] for key in VQA_SCHEMA.names}
    annotations = []
    for i in rows:
        asked = questions(corpus.scenes[i], rng, per_image)
        annotated = [targets(qa, rng) for qa in asked] if targets else []
        question_ids = [question_id_offset + i * 10 + q for q in range(len(asked))]
        columns["image"].append(corpus.images[i])
        columns["questions"].append([qa.question for qa in asked])
        for k, key in enumerate(("answers", "answer_labels", "answer_scores")):
            columns[key].append([target[k] for target in annotated])
        columns["image_id"].append(i)
        columns["question_id"].append(question_ids)
        columns["split"].append(split)
        annotations += [official_annotation(qid, i, qa, target[3]) for qid, qa, target in zip(question_ids, asked, annotated)]
    return ArrowFile(name, VQA_SCHEMA if targets else VQA_TEST_SCHEMA, columns, list(rows), annotations)


def official_annotation(question_id: int, image_id: int, qa: QA, raw_answers: list[str]) -> dict:
    """One entry of an official VQAv2 annotations file."""
    return {
        "question_id": question_id, "image_id": image_id, "multiple_choice_answer": qa.answer,
        "answers": [{"answer": answer, "answer_id": k + 1} for k, answer in enumerate(raw_answers)],
    }


def vqa_files(corpus: Corpus) -> list[ArrowFile]:
    """VQAv2 train / val (and its trainable_val / rest_val halves) / test / test-dev, and VG-QA."""
    train, val, test = corpus.pools["train"], corpus.pools["val"], corpus.pools["test"]
    val_file = vqa_file(corpus, "vqav2_val", val, "val")
    test_file = vqa_file(corpus, "vqav2_test", test, "test", targets=None)
    n_rest = max(2, len(val) // 2)
    return [
        vqa_file(corpus, "vqav2_train", train, "train"),
        val_file,
        val_file.rows(0, len(val) - n_rest, "vqav2_trainable_val", "val"),
        val_file.rows(len(val) - n_rest, len(val), "vqav2_rest_val", "val"),
        test_file,
        test_file.rows(0, max(2, len(test) // 2), "vqav2_test-dev", "test-dev"),
        vqa_file(
            corpus, "vgqa_train", train, "train", VGQA_QUESTIONS_PER_IMAGE, _single_target, VGQA_QUESTION_ID_OFFSET
        ),
    ]


# --- NLVR2 and SNLI-VE files ---


def nlvr2_file(corpus: Corpus, split: str, pool: list[int]) -> ArrowFile:
    """``nlvr2_{split}``: one balanced true/false statement per image pair, two pairs per image."""
    rng = corpus.rng(f"nlvr2_{split}")
    examples = [nlvr2_example(corpus.scenes, np.asarray(pool), rng) for _ in range(2 * len(pool))]
    return ArrowFile(f"nlvr2_{split}", NLVR2_SCHEMA, {
        "image_0": [corpus.images[left] for left, _, _, _ in examples],
        "image_1": [corpus.images[right] for _, right, _, _ in examples],
        "questions": [[text] for _, _, text, _ in examples],
        "answers": [[str(truth)] for _, _, _, truth in examples],
        "identifier": [f"{split}-{row}-0" for row in range(len(examples))],
    }, [[left, right] for left, right, _, _ in examples])


def snli_file(corpus: Corpus, split: str, rows: list[int]) -> ArrowFile:
    """``snli_{split}``: per image one hypothesis of each label, each paired with a caption premise."""
    rng = corpus.rng(f"snli_{split}")
    sentences, labels = [], []
    for i in rows:
        scene = corpus.scenes[i]
        order = [int(label) for label in rng.permutation(3)]
        premises = captions(scene, rng, len(order))
        sentences.append([[premise, hypothesis(scene, label, rng)] for premise, label in zip(premises, order)])
        labels.append(order)
    return ArrowFile(f"snli_{split}", SNLI_SCHEMA, {
        "image": [corpus.images[i] for i in rows], "sentences": sentences, "labels": labels,
    }, list(rows))


def pair_files(corpus: Corpus) -> list[ArrowFile]:
    """NLVR2 train / dev / test1 and SNLI-VE train / dev / test."""
    pools = [corpus.pools[pool] for pool in ("train", "val", "test")]
    nlvr2 = [nlvr2_file(corpus, split, pool) for split, pool in zip(("train", "dev", "test1"), pools)]
    snli = [snli_file(corpus, split, pool) for split, pool in zip(("train", "dev", "test"), pools)]
    return nlvr2 + snli


# --- ALBEF / GRIT-VLP json files ---

JSON_IMAGE_DIR = "images"
ANSWER_LIST = "downstream_json/answer_list.json"


def image_file(index: int) -> str:
    """Path of image ``index`` relative to the synthetic root (its json ``image_root``)."""
    return f"{JSON_IMAGE_DIR}/{index:06d}.jpg"


def _raw_answers(*files: ArrowFile) -> dict[int, list[str]]:
    """Question id → the annotators' answers, from the official annotations of ``files``."""
    return {a["question_id"]: [x["answer"] for x in a["answers"]] for file in files for a in file.annotations}


def vqa_json(file: ArrowFile, dataset: str, raw_answers: dict[int, list[str]] | None) -> list[dict]:
    """The questions of a VQA file as json entries; ``raw_answers=None`` writes the test layout
    (no answers); ``vg`` entries get their single answer as a string."""
    entries = []
    for image, questions_of_image, question_ids in zip(file.images, file.columns["questions"], file.columns["question_id"]):
        for question, question_id in zip(questions_of_image, question_ids):
            answer = None if raw_answers is None else raw_answers[question_id]
            if answer is not None and dataset == "vg":
                answer = answer[0]
            entries.append(vqa_entry(question_id, question, image_file(image), dataset, answer))
    return entries


def albef_json(files: Sequence[ArrowFile]) -> dict[str, list]:
    """The json files (path relative to the root → entries), built from the Arrow files."""
    by_name = {file.name: file for file in files}

    def images(*names: str) -> list[str]:
        return [image_file(i) for name in names for i in by_name[name].images]

    def column(key: str, *names: str) -> list:
        return [value for name in names for value in by_name[name].columns[key]]

    coco_train = ("coco_caption_karpathy_train", "coco_caption_karpathy_restval")
    sbu = tuple(f"sbu_{k}" for k in range(SBU_SHARDS))
    raw_answers = _raw_answers(by_name["vqav2_train"], by_name["vqav2_val"], by_name["vgqa_train"])
    out = {
        "json_pretrain/pretrain.json": pretrain_entries(images(*coco_train), column("caption", *coco_train))
        + pretrain_entries(images(*sbu), [captions[0] for captions in column("caption", *sbu)]),
        "downstream_json/coco_train.json": retrieval_train_entries(
            images(*coco_train), column("caption", *coco_train), column("image_id", *coco_train)
        ),
        "downstream_json/vqa_train.json": vqa_json(by_name["vqav2_train"], "vqa", raw_answers),
        "downstream_json/vqa_val.json": vqa_json(by_name["vqav2_rest_val"], "vqa", raw_answers),
        "downstream_json/vg_qa.json": vqa_json(by_name["vgqa_train"], "vg", raw_answers),
        "downstream_json/vqa_test.json": vqa_json(by_name["vqav2_test"], "vqa", None),
        ANSWER_LIST: list(ANSWERS),
    }
    for split in ("val", "test"):
        name = f"coco_caption_karpathy_{split}"
        out[f"downstream_json/coco_{split}.json"] = retrieval_eval_entries(images(name), column("caption", name))
    for split, name in (("train", "nlvr2_train"), ("dev", "nlvr2_dev"), ("test", "nlvr2_test1")):
        file = by_name[name]
        out[f"downstream_json/nlvr_{split}.json"] = nlvr_entries(
            [[image_file(i) for i in pair] for pair in file.images],
            [texts[0] for texts in file.columns["questions"]],
            [answers[0] for answers in file.columns["answers"]],
        )
    return out


def write_albef_json(out_dir: str, corpus: Corpus, files: Sequence[ArrowFile]) -> dict[str, int]:
    """Write ``images/`` and the json files; returns each json file's entry count by its path
    relative to ``out_dir`` (the ``root`` of the summary's ``json``: use it as ``data_root``,
    ``image_root``, ``vqa_root`` and ``vg_root``)."""
    os.makedirs(os.path.join(out_dir, JSON_IMAGE_DIR), exist_ok=True)
    for index, data in enumerate(corpus.images):
        _write_bytes(os.path.join(out_dir, image_file(index)), data)
    written = {}
    for path, entries in albef_json(files).items():
        os.makedirs(os.path.dirname(os.path.join(out_dir, path)), exist_ok=True)
        _write_json(os.path.join(out_dir, path), entries)
        written[path] = len(entries)
    return written


# --- ImageFolder tree ---

IMAGEFOLDER_DIR = "imagefolder"
IMAGEFOLDER_CLASSES = tuple(f"{color}_{kind}" for color in COLORS for kind in KINDS)
IMAGEFOLDER_RADIUS = (0.22, 0.4)
"""Range of the shape's radius as a fraction of the image side."""
IMAGEFOLDER_STREAMS = {"train": 3, "val": 4}
"""Random streams of the two splits (the scenes use 0-2), so the other files do not change."""


def class_image(name: str, image_size: int, rng: np.random.Generator) -> bytes:
    """JPEG bytes of one ``{color}_{kind}`` shape, random radius and centre, fully inside."""
    color, kind = name.split("_")
    radius = rng.uniform(*IMAGEFOLDER_RADIUS) * image_size
    cx, cy = rng.uniform(radius, image_size - radius, size=2)
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw_kind(ImageDraw.Draw(image), kind, COLORS[color], float(cx), float(cy), float(radius))
    return noisy_jpeg(image, rng)


def write_imagefolder(out_dir: str, num_train: int, num_val: int, seed: int, image_size: int) -> dict:
    """Write ``out_dir/imagefolder/{train,val}/{class}/NNNNNN.jpg``, image i of a split in class
    ``i mod 18``; returns its summary (root, classes, image counts, chance top-1)."""
    root = os.path.join(out_dir, IMAGEFOLDER_DIR)
    for split, count in (("train", num_train), ("val", num_val)):
        rng = np.random.default_rng([seed, IMAGEFOLDER_STREAMS[split]])
        for name in IMAGEFOLDER_CLASSES:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
        for index in range(count):
            name = IMAGEFOLDER_CLASSES[index % len(IMAGEFOLDER_CLASSES)]
            _write_bytes(os.path.join(root, split, name, f"{index:06d}.jpg"), class_image(name, image_size, rng))
    return {"root": root, "classes": list(IMAGEFOLDER_CLASSES), "train": num_train, "val": num_val,
            "chance_top1": 1 / len(IMAGEFOLDER_CLASSES)}


# --- tokenizer ---


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [text for item in value for text in _strings(item)] if isinstance(value, list) else []


def corpus_texts(files: Sequence[ArrowFile]) -> list[str]:
    """Every text of every file (captions, questions, answers, premises and hypotheses), in order."""
    texts = [text for file in files for column in TEXT_COLUMNS for text in _strings(file.columns.get(column, []))]
    return texts + list(ANSWERS)


def _bert_backend() -> Tokenizer:
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return backend


def wordpiece_vocab(texts: Sequence[str], max_size: int | None = None) -> dict[str, int]:
    """Special tokens, then every word by falling count (ties alphabetical), then each character
    alone and as a ``##`` continuation, so unseen lower-case words split into pieces, not [UNK].
    ``max_size`` keeps only the most frequent words that fit (None: all, at most
    ``TOKENIZER_VOCAB_SIZE`` tokens).

    Built from counts instead of ``tokenizers``' WordPieceTrainer, whose ties between merges break
    through Rust hash maps: its vocabulary changed from one run to the next.
    """
    backend = _bert_backend()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)))
    ranked = sorted(words, key=lambda word: (-words[word], word))
    characters = sorted(set("".join(words)) | set(BASE_CHARACTERS))
    if max_size is not None:
        ranked = ranked[:max(0, max_size - len(SPECIAL_TOKENS) - 2 * len(characters))]
    tokens = list(dict.fromkeys([*SPECIAL_TOKENS, *ranked, *characters, *(f"##{c}" for c in characters)]))
    if max_size is None and len(tokens) > TOKENIZER_VOCAB_SIZE:
        raise ValueError(f"the synthetic texts need {len(tokens)} tokens, more than {TOKENIZER_VOCAB_SIZE}")
    return {token: index for index, token in enumerate(tokens)}


def build_tokenizer(texts: Sequence[str], max_size: int | None = None) -> BertTokenizerFast:
    """A lower-casing BERT-style WordPiece tokenizer for ``texts`` ([PAD] has id 0); ``max_size``
    as ``wordpiece_vocab``."""
    backend = _bert_backend()
    backend.model = models.WordPiece(wordpiece_vocab(texts, max_size), unk_token="[UNK]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(token, backend.token_to_id(token)) for token in ("[CLS]", "[SEP]")],
    )
    backend.decoder = decoders.WordPiece()
    return BertTokenizerFast(
        tokenizer_object=backend, do_lower_case=True, unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


# --- writing ---


def _replace_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(temporary path)``, then rename it to ``path``."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_bytes(path: str, data: bytes) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            handle.write(data)

    _replace_atomically(path, write)


def _write_json(path: str, value: object) -> None:
    _write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def write_arrow(path: str, file: ArrowFile) -> None:
    """Write ``file`` as an Arrow IPC file (the reference's ``RecordBatchFileWriter`` format)."""
    table = pa.Table.from_pydict(file.columns, schema=file.schema)

    def write(temporary: str) -> None:
        with pa.OSFile(temporary, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    _replace_atomically(path, write)


def save_tokenizer(tokenizer: BertTokenizerFast, directory: str) -> None:
    """``save_pretrained`` into a temporary folder, then move each file into ``directory``."""
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tokenizer.", dir=os.path.dirname(os.path.abspath(directory)))
    try:
        tokenizer.save_pretrained(staging)
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _annotated(file: ArrowFile) -> list[tuple[list[str], list[float]]]:
    """``(answers, scores)`` of every question of a VQA file."""
    return [pair for row in zip(file.columns["answers"], file.columns["answer_scores"]) for pair in zip(*row)]


def _vqa_majority(train: ArrowFile, val: ArrowFile) -> tuple[str, float]:
    """The most frequent true answer of ``train`` and its mean VQA score on ``val``."""
    true_answers = [answers[scores.index(max(scores))] for answers, scores in _annotated(train)]
    majority = Counter(true_answers).most_common(1)[0][0]
    return majority, float(np.mean([dict(zip(*question)).get(majority, 0.0) for question in _annotated(val)]))


def summary(
    out_dir: str, corpus: Corpus, files: Sequence[ArrowFile], json_files: dict[str, int], vocab_size: int,
    imagefolder: dict,
) -> dict:
    """What ``synth_info.json`` holds."""
    by_name = {file.name: file for file in files}
    answer, score = _vqa_majority(by_name["vqav2_train"], by_name["vqav2_rest_val"])
    return {
        "format_version": FORMAT_VERSION,
        "seed": corpus.seed,
        "num_images": len(corpus.scenes),
        "image_size": corpus.image_size,
        "pools": {split: len(pool) for split, pool in corpus.pools.items()},
        "files": {file.name: len(file.images) for file in files},
        "answer_vocab_size": len(ANSWERS),
        "vqav2_label_size": len(ANSWERS),
        "answer_vocab": os.path.join(out_dir, "vqa_answer_vocab.json"),
        "tokenizer": os.path.join(out_dir, "tokenizer"),
        "vocab_size": vocab_size,
        "json": {
            "root": out_dir,
            "answer_list": os.path.join(out_dir, ANSWER_LIST),
            "files": json_files,
        },
        "imagefolder": imagefolder,
        "chance": {
            "vqa_majority_answer": answer,
            "vqa": score,
            "itm": 0.5,
            "nlvr2": 0.5,
            "snli": 1 / 3,
        },
    }


def _write_files(out_dir: str, corpus: Corpus, files: Sequence[ArrowFile], log: Callable[[str], None]) -> None:
    for file in files:
        write_arrow(os.path.join(out_dir, f"{file.name}.arrow"), file)
        log(f"wrote {file.name}.arrow ({len(file.images)} rows)")
    label_info = {"ans2label": ANS2LABEL, "label2ans": list(ANSWERS)}
    _write_bytes(os.path.join(out_dir, "coco_vqa_label_info.pkl"), pickle.dumps(label_info, protocol=4))
    _write_json(os.path.join(out_dir, "vqa_answer_vocab.json"), ANS2LABEL)
    val = next(file for file in files if file.name == "vqav2_val")
    _write_json(os.path.join(out_dir, OFFICIAL_VAL_ANNOTATIONS), {"annotations": val.annotations})
    _write_json(os.path.join(out_dir, "scenes.json"), {
        "scenes": [[shape.to_dict() for shape in scene.shapes] for scene in corpus.scenes],
        "rows": {file.name: file.images for file in files},
    })


def write_synthetic(
    out_dir: str, num_images: int = 200, seed: int = 0, image_size: int = 64, progress: bool = False
) -> dict:
    """Write the synthetic dataset into ``out_dir`` and return its summary (also ``synth_info.json``).

    Raises ``ValueError`` / ``TypeError`` for bad arguments (``num_images`` below ``MIN_IMAGES``,
    ``image_size`` below ``MIN_IMAGE_SIZE``, a negative ``seed``).
    """
    _check_arguments(out_dir, num_images, seed, image_size)
    out_dir = os.path.abspath(os.fspath(out_dir))

    def log(message: str) -> None:
        if progress:
            print(f"[synth] {message}", file=sys.stderr, flush=True)

    os.makedirs(out_dir, exist_ok=True)
    corpus = build_corpus(num_images, seed, image_size)
    log(f"rendered {num_images} images of {image_size}px")
    files = caption_files(corpus) + vqa_files(corpus) + pair_files(corpus)
    _write_files(out_dir, corpus, files, log)
    json_files = write_albef_json(out_dir, corpus, files)
    log(f"wrote {len(corpus.images)} images and {len(json_files)} json files")
    clipvil = write_lxmert(out_dir, corpus, files, _write_bytes, _write_json)
    log(f"wrote CLIP-ViL's LXMERT-format json and images to {clipvil['root']}")
    tokenizer = build_tokenizer(corpus_texts(files))
    save_tokenizer(tokenizer, os.path.join(out_dir, "tokenizer"))
    log(f"saved a tokenizer of {len(tokenizer)} tokens")
    imagefolder = write_imagefolder(
        out_dir, num_images, max(len(IMAGEFOLDER_CLASSES), num_images // 4), seed, image_size
    )
    log(f"wrote an ImageFolder tree of {len(IMAGEFOLDER_CLASSES)} classes to {imagefolder['root']}")
    info = {**summary(out_dir, corpus, files, json_files, len(tokenizer), imagefolder), "clipvil": clipvil}
    _write_json(os.path.join(out_dir, "synth_info.json"), info)
    return info

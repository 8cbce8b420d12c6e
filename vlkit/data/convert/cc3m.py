"""Conceptual Captions 3M (fact sheet §4.2) → ``conceptual_caption_{train,val}_K``, ``shard_size``
inputs per shard (100,000 by default), the SBU columns.

Per split, either the reference's ``{split}_annot.json`` (a list of ``[image path, caption]``;
images matched by file name under ``images_{split}/`` or one folder below), or the official tsv
(``Train_GCC-training.tsv`` / ``Validation_GCC-1.1.0-Validation.tsv``: ``caption<TAB>url`` per
line), whose line ``i`` (from 0) is the downloaded file named ``i`` (any extension, leading zeros
allowed). A split with neither file is left out and named in the manifest; neither split present
is an error.
"""
from __future__ import annotations

import os

from vlkit.data.convert.inputs import RawInputError, RawInputs
from vlkit.data.convert.jobs import Plan
from vlkit.data.convert.pipeline import Converter, Options
from vlkit.data.convert.sbu import albef_pretrain_entries, annotation_pairs, caption_job, folder_index

SPLITS = ("train", "val")
TSV = {"train": "Train_GCC-training.tsv", "val": "Validation_GCC-1.1.0-Validation.tsv"}


def _stem_number(path: str) -> int | None:
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else None


def tsv_captions(path: str) -> list[str]:
    """The captions of an official tsv, by line; a line without ``caption<TAB>url`` is an error."""
    captions = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[0]:
                raise RawInputError(f"{path}: line {number} is not 'caption<TAB>url': {line.strip()[:80]!r}")
            captions.append(parts[0])
    return captions


def split_items(inputs: RawInputs, split: str) -> list[tuple[str, str, str]] | None:
    """``(image_id, image path, caption)`` of ``split``, or None when it has no annotation file."""
    folder_key = f"{split}_images"
    if inputs.exists(f"{split}_annot"):
        pairs = annotation_pairs(inputs.file(f"{split}_annot"))
        folder = inputs.folder(folder_key)
        index = folder_index(folder)
        return [(os.path.basename(p), index.get(os.path.basename(p), os.path.join(folder, os.path.basename(p))), c)
                for p, c in pairs]
    if inputs.exists(f"{split}_tsv"):
        captions = tsv_captions(inputs.file(f"{split}_tsv"))
        folder = inputs.folder(folder_key)
        index = folder_index(folder, key=_stem_number)
        paths = [index.get(i, os.path.join(folder, f"{i}.jpg")) for i in range(len(captions))]
        return [(os.path.basename(path), path, caption) for path, caption in zip(paths, captions)]
    return None


def plan(inputs: RawInputs, options: Options) -> Plan:
    jobs, absent = [], []
    for split in SPLITS:
        items = split_items(inputs, split)
        if items is None:
            absent.append(split)
        else:
            jobs.append(caption_job(f"conceptual_caption_{split}", split, items, options.shard_size))
    if not jobs:
        expected = ", ".join(inputs.path(f"{s}_{kind}") for s in SPLITS for kind in ("annot", "tsv"))
        raise RawInputError(f"cc3m: no annotation file found; expected one of {expected} (or give --path KEY=PATH)")
    return Plan(jobs, report={"splits_absent": absent})


CONVERTER = Converter(
    name="cc3m",
    summary="Conceptual Captions ({train,val}_annot.json or the official tsv + images_{train,val}/), sharded",
    inputs={
        "train_annot": "train_annot.json", "val_annot": "val_annot.json",
        "train_tsv": TSV["train"], "val_tsv": TSV["val"],
        "train_images": "images_train", "val_images": "images_val",
    },
    plan=plan,
    json_formats={"albef": albef_pretrain_entries("cc3m_{split}.json")},
)

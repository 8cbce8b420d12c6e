"""SNLI-VE (meter_elip.md §4.1, METER's ``write_snli.py``): ``snli_ve_{train,dev,test}.jsonl``
beside ``Flickr30K/images/`` → ``snli_{train,dev,test}``.

Hypotheses are grouped per ``Flickr30K_ID`` (first-seen order), one row per image: ``sentences``
= ``[sentence1, sentence2]`` pairs (premise caption, hypothesis), ``labels`` from ``gold_label``
(contradiction 0, neutral 1, entailment 2). Lines with another gold label (``-``: no consensus)
are left out and counted in the manifest.
"""
from __future__ import annotations

import os
from collections import Counter

from vlkit.data.convert import albef_json
from vlkit.data.convert.inputs import RawInputs, field, read_jsonl
from vlkit.data.convert.jobs import Plan, Row, TableJob
from vlkit.data.convert.pipeline import Converter, Options
from vlkit.data.synthetic import SNLI_SCHEMA

SPLITS = ("train", "dev", "test")
LABELS = {name: label for label, name in enumerate(albef_json.SNLI_LABEL_NAMES)}


def group_images(path: str, counts: Counter) -> dict[str, list[tuple[list[str], int]]]:
    """Flickr30K id → its ``([premise, hypothesis], label)`` pairs, file order."""
    images: dict[str, list[tuple[list[str], int]]] = {}
    for number, record in read_jsonl(path):
        where = f"{path}: line {number}"
        image_id = str(field(record, "Flickr30K_ID", where))
        pair = [field(record, "sentence1", where), field(record, "sentence2", where)]
        gold = field(record, "gold_label", where)
        counts["hypotheses"] += 1
        if gold not in LABELS:
            counts["dropped_without_gold_label"] += 1
            continue
        images.setdefault(image_id, []).append((pair, LABELS[gold]))
    return images


def plan(inputs: RawInputs, options: Options) -> Plan:
    folder = inputs.folder("images")
    jobs, report = [], {}
    for split in SPLITS:
        counts: Counter[str] = Counter()
        images = group_images(inputs.file(split), counts)

        def rows(images=images, split=split):
            for image_id, items in images.items():
                yield Row(image_id, {"image": os.path.join(folder, f"{image_id}.jpg")},
                          {"sentences": [pair for pair, _ in items], "labels": [label for _, label in items]})

        jobs.append(TableJob(f"snli_{split}", SNLI_SCHEMA, rows, len(images), split))
        report[split] = dict(counts)
    return Plan(jobs, report={"snli_ve": report})


def albef_entries(job: TableJob, row: Row, root: str):
    """ALBEF ``ve_{train,dev,test}.json``: ``image`` is the Flickr30K id (``image_root`` = the
    Flickr30K image folder), one entry per hypothesis."""
    return [(f"ve_{job.split}.json", albef_json.ve(row.key, pair[1], label))
            for pair, label in zip(row.values["sentences"], row.values["labels"])]


CONVERTER = Converter(
    name="snli_ve",
    summary="SNLI-VE (snli_ve_{train,dev,test}.jsonl + Flickr30K/images/)",
    inputs={**{split: f"snli_ve_{split}.jsonl" for split in SPLITS}, "images": "Flickr30K/images"},
    plan=plan,
    json_formats={"albef": albef_entries},
)

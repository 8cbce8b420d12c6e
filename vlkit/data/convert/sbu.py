"""SBU Captions (fact sheet §4.2): ``annot.json`` (a list of ``[image path, caption]``) beside
``images_train/*/*`` → ``sbu_0``, ``sbu_1``, ... of ``shard_size`` inputs each (100,000 by default).

An annotation finds its image by file name anywhere one folder below ``images_train/`` (or in it).
Columns: ``image``, ``caption`` (one-element list), ``image_id`` (the file name), ``split``
(``train``). Also used by Conceptual Captions.
"""
from __future__ import annotations

import os

from vlkit.data.convert import albef_json
from vlkit.data.convert.emit import relative_image
from vlkit.data.convert.inputs import RawInputError, RawInputs, index_images, load_json
from vlkit.data.convert.jobs import Plan, Row, TableJob
from vlkit.data.convert.pipeline import Converter, Options
from vlkit.data.synthetic import CAPTION_SCHEMA


def annotation_pairs(path: str) -> list[tuple[str, str]]:
    """``[(image path, caption), ...]`` of a ``[[path, caption], ...]`` json file."""
    pairs = load_json(path)
    if not isinstance(pairs, list):
        raise RawInputError(f"{path}: expected a json list of [image path, caption] pairs")
    for position, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RawInputError(f"{path}: entry {position} is {pair!r}; expected [image path, caption]")
    return [(image, caption) for image, caption in pairs]


def folder_index(folder: str, key=os.path.basename) -> dict[str, str]:
    """``key(path)`` → path of the files in ``folder`` and one folder below."""
    return {**index_images([folder], depth=2, key=key), **index_images([folder], depth=1, key=key)}


def caption_job(name: str, split: str, items: list[tuple[str, str, str]], shard_size: int) -> TableJob:
    """Sharded single-caption rows from ``(image_id, image path, caption)`` items."""

    def rows():
        for image_id, path, caption in items:
            yield Row(image_id, {"image": path}, {"caption": [caption], "image_id": image_id, "split": split})

    return TableJob(name, CAPTION_SCHEMA, rows, len(items), split, shard_size)


def plan(inputs: RawInputs, options: Options) -> Plan:
    pairs = annotation_pairs(inputs.file("annotations"))
    folder = inputs.folder("images")
    index = folder_index(folder)
    items = [(os.path.basename(image), index.get(os.path.basename(image), os.path.join(folder, os.path.basename(image))),
              caption) for image, caption in pairs]
    return Plan([caption_job("sbu", "train", items, options.shard_size)])


def albef_pretrain_entries(file_name: str):
    """ALBEF pre-training entries (one caption each) into ``file_name`` (``{split}`` filled in)."""

    def entries(job: TableJob, row: Row, root: str):
        image = relative_image(row.images["image"], root)
        return [(file_name.format(split=job.split), e) for e in albef_json.pretrain(image, row.values["caption"])]

    return entries


CONVERTER = Converter(
    name="sbu",
    summary="SBU Captions (annot.json + images_train/*/*), sharded sbu_K",
    inputs={"annotations": "annot.json", "images": "images_train"},
    plan=plan,
    json_formats={"albef": albef_pretrain_entries("sbu.json")},
)

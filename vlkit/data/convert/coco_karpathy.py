"""COCO captions in Karpathy's splits (fact sheet §4.2): ``karpathy/dataset_coco.json`` beside
``train2014/`` and ``val2014/`` → ``coco_caption_karpathy_{train,restval,val,test}``.

Also shared by Flickr30K (``f30k``): the Karpathy json lists ``images`` with ``filename``,
``split`` and ``sentences[].raw``; one row per image, ``caption`` = every raw sentence,
``image_id`` = the file name, ``split`` = the Karpathy split. Rows follow the json's order.
"""
from __future__ import annotations

import os
from typing import Callable

from vlkit.data.convert import albef_json, lxmert_json
from vlkit.data.convert.emit import relative_image
from vlkit.data.convert.inputs import RawInputError, RawInputs, field, list_field, load_json
from vlkit.data.convert.jobs import Plan, Row, TableJob
from vlkit.data.convert.pipeline import Converter, Options
from vlkit.data.synthetic import CAPTION_SCHEMA

COCO_SPLITS = ("train", "restval", "val", "test")


def karpathy_images(path: str) -> list[dict]:
    """The ``images`` list of a Karpathy split json, each checked for its fields."""
    images = list_field(load_json(path), "images", path)
    for position, image in enumerate(images):
        where = f"{path}: images[{position}]"
        field(image, "filename", where)
        field(image, "split", where)
        for sentence in list_field(image, "sentences", where):
            field(sentence, "raw", f"{where}.sentences")
    return images


def karpathy_plan(
    images: list[dict], splits: tuple[str, ...], prefix: str, image_path: Callable[[dict], str], source: str
) -> Plan:
    """One caption table per split, rows in json order; images of other splits are an error."""
    unknown = sorted({image["split"] for image in images} - set(splits))
    if unknown:
        raise RawInputError(f"{source}: split(s) {unknown} are not Karpathy splits {list(splits)}")

    def job(split: str) -> TableJob:
        chosen = [image for image in images if image["split"] == split]

        def rows():
            for image in chosen:
                yield Row(image["filename"], {"image": image_path(image)}, {
                    "caption": [sentence["raw"] for sentence in image["sentences"]],
                    "image_id": image["filename"], "split": split,
                }, {"image_id": image.get("cocoid", os.path.splitext(image["filename"])[0])})

        return TableJob(f"{prefix}_{split}", CAPTION_SCHEMA, rows, len(chosen), split)

    return Plan([job(split) for split in splits])


def plan(inputs: RawInputs, options: Options) -> Plan:
    images = karpathy_images(inputs.file("karpathy"))
    folders = {}
    for folder in sorted({image.get("filepath", "") for image in images}):
        if folder not in ("train2014", "val2014"):
            raise RawInputError(f"{inputs.path('karpathy')}: filepath {folder!r} is neither train2014 nor val2014")
        folders[folder] = inputs.folder(folder)
    return karpathy_plan(images, COCO_SPLITS, "coco_caption_karpathy",
                         lambda image: os.path.join(folders[image["filepath"]], image["filename"]), inputs.path("karpathy"))


def albef_retrieval_entries(dataset: str) -> Callable:
    """ALBEF retrieval files ``{dataset}_{train,val,test}.json`` (train holds restval too)."""

    def entries(job: TableJob, row: Row, root: str):
        image = relative_image(row.images["image"], root)
        captions = row.values["caption"]
        if job.split in ("train", "restval"):
            return [(f"{dataset}_train.json", e) for e in albef_json.retrieval_train(image, captions, row.extra["image_id"])]
        return [(f"{dataset}_{job.split}.json", e) for e in albef_json.retrieval_eval(image, captions)]

    return entries


def lxmert_entries(job: TableJob, row: Row, root: str):
    """LXMERT pre-training records ``mscoco_{split}.json`` (captions under source ``mscoco``)."""
    img_id = lxmert_json.coco_img_id(row.values["image_id"])
    return [(f"mscoco_{job.split}.json", lxmert_json.caption_record(img_id, "mscoco", row.values["caption"]))]


CONVERTER = Converter(
    name="coco_karpathy",
    summary="COCO captions, Karpathy splits (karpathy/dataset_coco.json + train2014/ val2014/)",
    inputs={"karpathy": "karpathy/dataset_coco.json", "train2014": "train2014", "val2014": "val2014"},
    plan=plan,
    json_formats={"albef": albef_retrieval_entries("coco"), "lxmert": lxmert_entries},
)

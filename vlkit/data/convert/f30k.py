"""Flickr30K captions in Karpathy's splits (fact sheet §4.2): ``karpathy/dataset_flickr30k.json``
beside ``flickr30k-images/`` → ``f30k_caption_karpathy_{train,val,test}`` (same columns as COCO's;
``image_id`` is the file name, e.g. ``1000092795.jpg``)."""
from __future__ import annotations

import os

from vlkit.data.convert.coco_karpathy import albef_retrieval_entries, karpathy_images, karpathy_plan
from vlkit.data.convert.inputs import RawInputs
from vlkit.data.convert.jobs import Plan
from vlkit.data.convert.pipeline import Converter, Options

F30K_SPLITS = ("train", "val", "test")


def plan(inputs: RawInputs, options: Options) -> Plan:
    images = karpathy_images(inputs.file("karpathy"))
    folder = inputs.folder("images")
    return karpathy_plan(images, F30K_SPLITS, "f30k_caption_karpathy",
                         lambda image: os.path.join(folder, image["filename"]), inputs.path("karpathy"))


CONVERTER = Converter(
    name="f30k_karpathy",
    summary="Flickr30K captions, Karpathy splits (karpathy/dataset_flickr30k.json + flickr30k-images/)",
    inputs={"karpathy": "karpathy/dataset_flickr30k.json", "images": "flickr30k-images"},
    plan=plan,
    json_formats={"albef": albef_retrieval_entries("flickr30k")},
)

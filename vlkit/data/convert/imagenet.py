"""ImageNet-style ImageFolder trees (``train/`` and ``val/``, one folder per class): a passthrough
check, nothing converted. ``vlkit imagenet`` reads the tree as it is; this reads every image the
way its loader (``vlkit.imagenet.data.SafeImageFolder``) will, and reports per split the images
found, the ones that cannot be decoded, and the classes, in the manifest."""
from __future__ import annotations

import os
from collections import Counter

from vlkit.data.convert.inputs import RawInputs
from vlkit.data.convert.jobs import Plan, Row, TableJob
from vlkit.data.convert.pipeline import Converter, Options

SPLITS = ("train", "val")


def plan(inputs: RawInputs, options: Options) -> Plan:
    from vlkit.imagenet.data import SafeImageFolder  # timm and torchvision: imported only when needed

    train = SafeImageFolder(inputs.folder("train"), transform=None, replace_unreadable=False)
    val = SafeImageFolder(inputs.folder("val"), transform=None, replace_unreadable=False,
                          class_to_idx=train.class_to_idx)
    jobs, report = [], {"classes": len(train.classes)}
    for split, folder in (("train", train), ("val", val)):
        samples = list(folder.samples)

        def rows(samples=samples, root=folder.root):
            for path, _ in samples:
                yield Row(os.path.relpath(path, root), {"image": path}, {})

        jobs.append(TableJob(f"imagenet_{split}", None, rows, len(samples), split))
        per_class = Counter(target for _, target in samples)
        report[split] = {"images": len(samples), "classes_with_images": len(per_class),
                         "fewest_per_class": min(per_class.values(), default=0)}
    return Plan(jobs, report={"imagefolder": report})


CONVERTER = Converter(
    name="imagenet",
    summary="ImageFolder tree (train/ val/ with one folder per class): decode check only",
    inputs={split: split for split in SPLITS},
    plan=plan,
)

"""Visual Genome region descriptions (fact sheet §4.2): ``annotations/region_descriptions.json``
beside ``images/VG_100K/`` and ``images/VG_100K_2/`` → ``vg``, one row per image with its region
phrases as ``caption`` and their boxes in ``x``, ``y``, ``width``, ``height``.

An image is found by its id in either folder (or directly in ``images/``, the flattened layout);
images with no region are left out and counted in the manifest.
"""
from __future__ import annotations

import os

from vlkit.data.convert import albef_json, lxmert_json
from vlkit.data.convert.emit import relative_image
from vlkit.data.convert.inputs import RawInputs, field, index_images, list_field, load_json
from vlkit.data.convert.jobs import Plan, Row, TableJob
from vlkit.data.convert.pipeline import Converter, Options
from vlkit.data.synthetic import VG_SCHEMA

VG_FOLDERS = ("VG_100K", "VG_100K_2", "")
BOX_FIELDS = ("x", "y", "width", "height")


def vg_image_index(folder: str) -> dict[str, str]:
    """Image id (file stem) → path, over ``VG_100K``, ``VG_100K_2`` and the folder itself."""
    return index_images([os.path.join(folder, sub) for sub in VG_FOLDERS],
                        key=lambda path: os.path.splitext(os.path.basename(path))[0])


def vg_image_path(index: dict[str, str], folder: str, image_id: int) -> str:
    """Where image ``image_id`` is (or, when absent, where it was expected)."""
    return index.get(str(image_id), os.path.join(folder, VG_FOLDERS[0], f"{image_id}.jpg"))


def plan(inputs: RawInputs, options: Options) -> Plan:
    path = inputs.file("regions")
    entries = load_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a json list of images with their regions")
    folder = inputs.folder("images")
    index = vg_image_index(folder)
    kept = []
    for position, entry in enumerate(entries):
        where = f"{path}: entry {position}"
        regions = list_field(entry, "regions", where)
        if regions:
            for region in regions:
                for name in ("phrase", *BOX_FIELDS):
                    field(region, name, f"{where} region")
            kept.append((entry["id"] if "id" in entry else field(regions[0], "image_id", where), regions))

    def rows():
        for image_id, regions in kept:
            values = {"caption": [region["phrase"] for region in regions], "image_id": str(image_id)}
            values |= {name: [int(region[name]) for region in regions] for name in BOX_FIELDS}
            yield Row(str(image_id), {"image": vg_image_path(index, folder, image_id)}, values)

    job = TableJob("vg", VG_SCHEMA, rows, len(kept), "train")
    return Plan([job], report={"images_without_regions": len(entries) - len(kept)})


def albef_entries(job: TableJob, row: Row, root: str):
    """ALBEF pre-training file ``vg.json`` (one entry per image, its phrases as caption list)."""
    return [("vg.json", e) for e in albef_json.pretrain(relative_image(row.images["image"], root), row.values["caption"])]


def lxmert_entries(job: TableJob, row: Row, root: str):
    """LXMERT pre-training records ``vg.json`` (phrases under source ``vg``)."""
    return [("vg.json", lxmert_json.caption_record(row.values["image_id"], "vg", row.values["caption"]))]


CONVERTER = Converter(
    name="vg",
    summary="Visual Genome region descriptions (annotations/region_descriptions.json + images/VG_100K*/)",
    inputs={"regions": "annotations/region_descriptions.json", "images": "images"},
    plan=plan,
    json_formats={"albef": albef_entries, "lxmert": lxmert_entries},
)

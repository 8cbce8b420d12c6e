"""NLVR2 (fact sheet §4.2): the json-lines files ``nlvr2/data/{train,dev,test1}.json`` (and, when
present, ``balanced/`` / ``unbalanced/`` dev and test1) beside ``images/train/``, ``dev/`` and
``test1/`` → ``nlvr2_{train,dev,test1,balanced_dev,...}``.

Statements are grouped per image pair (the identifier without its last ``-N``), one row per pair
in first-seen order: ``image_0`` / ``image_1`` from ``{pair}-img0.png`` / ``-img1.png`` (train:
under the statement's ``directory``), ``questions`` (sentences), ``answers`` (``"True"`` /
``"False"``), ``identifier`` (the pair).
"""
from __future__ import annotations

import os

from vlkit.data.convert import albef_json
from vlkit.data.convert.emit import relative_image
from vlkit.data.convert.inputs import RawInputError, RawInputs, field, read_jsonl
from vlkit.data.convert.jobs import Plan, Row, TableJob
from vlkit.data.convert.pipeline import Converter, Options
from vlkit.data.synthetic import NLVR2_SCHEMA

SPLITS = ("train", "dev", "test1")
OPTIONAL = ("balanced_dev", "balanced_test1", "unbalanced_dev", "unbalanced_test1")
LABELS = {"True": "True", "False": "False", True: "True", False: "False"}


def image_split(table: str) -> str:
    """The image folder of a table: ``balanced_dev`` → ``dev``."""
    return table.split("_")[-1]


def group_pairs(path: str) -> dict[str, list[dict]]:
    """Pair identifier → its statements (``sentence``, ``label``, ``directory``), file order."""
    pairs: dict[str, list[dict]] = {}
    for number, record in read_jsonl(path):
        where = f"{path}: line {number}"
        identifier = field(record, "identifier", where)
        label = field(record, "label", where)
        if label not in LABELS:
            raise RawInputError(f"{where}: label must be 'True' or 'False', got {label!r}")
        pair = identifier.rsplit("-", 1)[0]
        pairs.setdefault(pair, []).append(
            {"sentence": field(record, "sentence", where), "label": LABELS[label], "directory": record.get("directory")})
    return pairs


def pair_images(folder: str, split: str, pair: str, statements: list[dict]) -> dict[str, str]:
    if split == "train":
        directory = statements[0]["directory"]
        if directory is None:
            raise RawInputError(f"nlvr2 train pair {pair}: no 'directory' field, needed to find its images")
        folder = os.path.join(folder, str(directory))
    return {f"image_{k}": os.path.join(folder, f"{pair}-img{k}.png") for k in range(2)}


def table_job(table: str, pairs: dict[str, list[dict]], folder: str) -> TableJob:
    split = image_split(table)

    def rows():
        for pair, statements in pairs.items():
            yield Row(pair, pair_images(folder, split, pair, statements), {
                "questions": [s["sentence"] for s in statements], "answers": [s["label"] for s in statements],
                "identifier": pair,
            })

    return TableJob(f"nlvr2_{table}", NLVR2_SCHEMA, rows, len(pairs), table)


def plan(inputs: RawInputs, options: Options) -> Plan:
    tables = list(SPLITS) + [name for name in OPTIONAL if inputs.exists(name)]
    jobs = [table_job(table, group_pairs(inputs.file(table)), inputs.folder(f"{image_split(table)}_images"))
            for table in tables]
    return Plan(jobs, report={"optional_files_absent": [inputs.path(n) for n in OPTIONAL if n not in tables]})


ALBEF_FILES = {"train": "nlvr_train.json", "dev": "nlvr_dev.json", "test1": "nlvr_test.json"}


def albef_entries(job: TableJob, row: Row, root: str):
    """ALBEF ``nlvr_{train,dev,test}.json`` (test = test1): one entry per statement."""
    if job.split not in ALBEF_FILES:
        return []
    images = [relative_image(row.images[f"image_{k}"], root) for k in range(2)]
    return [(ALBEF_FILES[job.split], albef_json.nlvr(images, sentence, label))
            for sentence, label in zip(row.values["questions"], row.values["answers"])]


CONVERTER = Converter(
    name="nlvr2",
    summary="NLVR2 (nlvr2/data/{train,dev,test1}.json + images/train/ dev/ test1/)",
    inputs={
        **{split: f"nlvr2/data/{split}.json" for split in SPLITS},
        **{name: f"nlvr2/data/{name.split('_')[0]}/{name}.json" for name in OPTIONAL},
        "train_images": "images/train", "dev_images": "dev", "test1_images": "test1",
    },
    plan=plan,
    json_formats={"albef": albef_entries},
)

"""``vlkit data check DIR``: what the Arrow tables in a folder hold, and what is wrong with them.

Per table: rows, images present / missing (empty cells) / failing to decode (as VLC's
``check_valid_images``, but reported, not deleted), duplicate ids (``image_id`` or
``identifier``, and VQA ``question_id``s), and for VQA tables the answer-vocabulary coverage
(questions with at least one answer label, labels used out of the vocabulary beside the tables;
questions without answers are a problem except in test splits, which have none).
Also flags ``*.partial`` leftovers of interrupted conversions and row counts that differ from
``manifest.json``. Tables are read one record batch at a time from the memory map.
"""
from __future__ import annotations

import glob
import json
import os
import pickle
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from vlkit.data.arrow import open_arrow
from vlkit.data.convert.images import decode_error
from vlkit.data.convert.manifest import read_manifest
from vlkit.data.convert.writer import PARTIAL_SUFFIX

ID_COLUMNS = ("image_id", "identifier")
EXAMPLES = 5
"""Examples of duplicate ids kept per table."""


def vocabulary_size(directory: str) -> int | None:
    """Size of the VQA answer vocabulary written beside the tables, if there is one."""
    json_path = os.path.join(directory, "vqa_answer_vocab.json")
    if os.path.isfile(json_path):
        with open(json_path, encoding="utf-8") as handle:
            return len(json.load(handle))
    pickle_path = os.path.join(directory, "coco_vqa_label_info.pkl")
    if os.path.isfile(pickle_path):
        with open(pickle_path, "rb") as handle:
            return len(pickle.load(handle)["label2ans"])
    return None


def _duplicates(values: list) -> tuple[int, list]:
    counts = Counter(values)
    repeated = [value for value, count in counts.items() if count > 1]
    return sum(counts[value] - 1 for value in repeated), repeated[:EXAMPLES]


def check_table(path: str, verify_images: bool = True, vocab_size: int | None = None, progress: bool = False) -> dict[str, Any]:
    """The report of one Arrow file (``{"error": ...}`` when it does not load)."""
    try:
        table = open_arrow(path)
    except (ValueError, OSError) as err:
        return {"error": str(err)}
    image_columns = [f.name for f in table.schema if pa.types.is_binary(f.type)]
    counts: Counter[str] = Counter()
    with tqdm(total=table.num_rows, desc=os.path.basename(path), unit="row", disable=not progress) as bar:
        for batch in table.to_batches():
            for column in image_columns:
                cells = batch.column(column)
                for index in range(len(cells)):
                    data = cells[index].as_py()
                    if not data:
                        counts["images_missing"] += 1
                    elif verify_images and decode_error(data):
                        counts["images_corrupt"] += 1
                    else:
                        counts["images_present"] += 1
            bar.update(batch.num_rows)
    report: dict[str, Any] = {"rows": table.num_rows, "columns": table.column_names,
                              **{k: counts[k] for k in ("images_present", "images_missing", "images_corrupt")}}
    id_column = next((c for c in ID_COLUMNS if c in table.column_names), None)
    if id_column:
        report["duplicate_ids"], report["duplicate_id_examples"] = _duplicates(table.column(id_column).to_pylist())
    if "question_id" in table.column_names:
        flat = pc.list_flatten(table.column("question_id")).to_pylist()
        report["questions"] = len(flat)
        report["duplicate_question_ids"], report["duplicate_question_id_examples"] = _duplicates(flat)
    if "answer_labels" in table.column_names and not pa.types.is_null(table.schema.field("answer_labels").type.value_type):
        per_question = pc.list_flatten(table.column("answer_labels"))
        answered = pc.sum(pc.greater(pc.list_value_length(per_question), 0)).as_py() or 0
        labels = set(pc.unique(pc.list_flatten(per_question)).to_pylist())
        report["vqa"] = {"questions_with_answer": answered, "questions": len(per_question),
                         "labels_used": len(labels), "vocabulary_size": vocab_size}
        if vocab_size:
            report["vqa"]["vocabulary_coverage"] = len(labels) / vocab_size
    return report


def is_test_split(name: str) -> bool:
    """True for a test split's table (``vqav2_test``, ``vqav2_test-dev``): its questions have no answers."""
    return name.rsplit("_", 1)[-1].startswith("test")


def table_problems(name: str, report: dict[str, Any]) -> list[str]:
    """What is wrong with one table, in words."""
    if "error" in report:
        return [f"{name}: {report['error']}"]
    problems = []
    for key, what in (("images_missing", "empty image cells"), ("images_corrupt", "images that do not decode"),
                      ("duplicate_ids", "duplicate ids"), ("duplicate_question_ids", "duplicate question ids")):
        if report.get(key):
            problems.append(f"{name}: {report[key]} {what}")
    vqa = report.get("vqa")
    if vqa and vqa["questions_with_answer"] < vqa["questions"] and not is_test_split(name):
        problems.append(f"{name}: {vqa['questions'] - vqa['questions_with_answer']} questions without an answer label")
    return problems


def check_directory(directory: str, verify_images: bool = True, progress: bool = False) -> dict[str, Any]:
    """The report of every ``*.arrow`` file in ``directory``, leftovers and manifest mismatches."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such folder; give the folder that holds the .arrow tables")
    vocab = vocabulary_size(directory)
    paths = sorted(glob.glob(os.path.join(directory, "*.arrow")))
    tables = {os.path.basename(p)[: -len(".arrow")]: check_table(p, verify_images, vocab, progress) for p in paths}
    problems = [p for name, report in tables.items() for p in table_problems(name, report)]
    leftovers = sorted(os.path.basename(p) for p in glob.glob(os.path.join(directory, f"*{PARTIAL_SUFFIX}")))
    problems += [f"{name}: left by an interrupted conversion (re-run it, with --resume to continue)" for name in leftovers]
    manifest = read_manifest(directory)
    for dataset, section in manifest.get("datasets", {}).items():
        for name, unit in section.get("tables", {}).items():
            if not unit.get("file"):
                continue
            if name not in tables:
                problems.append(f"{name}: listed in manifest.json ({dataset}) but absent")
            elif tables[name].get("rows") != unit["rows"]:
                problems.append(f"{name}: {tables[name].get('rows')} rows, manifest.json ({dataset}) says {unit['rows']}")
    if not tables:
        problems.append(f"{directory}: no .arrow table found")
    return {"directory": os.path.abspath(directory), "tables": tables, "leftovers": leftovers,
            "problems": problems, "ok": not problems}


def format_report(report: dict[str, Any]) -> str:
    """A short table of the report, one line per file, then the problems."""
    lines = [f"{'table':40s} {'rows':>8s} {'images':>8s} {'missing':>8s} {'corrupt':>8s} {'dup ids':>8s}  vqa coverage"]
    for name, table in report["tables"].items():
        if "error" in table:
            lines.append(f"{name:40s} unreadable")
            continue
        vqa = table.get("vqa")
        coverage = (f"{vqa['questions_with_answer']}/{vqa['questions']} answered, {vqa['labels_used']}"
                    f"/{vqa['vocabulary_size'] or '?'} labels") if vqa else ""
        lines.append(f"{name:40s} {table['rows']:8d} {table['images_present']:8d} {table['images_missing']:8d} "
                     f"{table['images_corrupt']:8d} {table.get('duplicate_ids', 0):8d}  {coverage}")
    lines += ["problems:", *(f"  {p}" for p in report["problems"])] if report["problems"] else ["no problems found"]
    return "\n".join(lines)

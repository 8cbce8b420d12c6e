"""Running a conversion: read each row's images (a bounded window of rows ahead, on a few threads),
write the Arrow tables in small batches and the json formats as streams, verify the counts, and
record the manifest.

Resuming. After every finished table (or shard) the counts and skipped items are saved in
``.NAME.convert_state.json`` with a fingerprint of the options and the source files. A run with
``resume=True`` and the same fingerprint keeps the finished tables and writes only the rest; any
other run starts over and overwrites. Tables are only ever renamed into place once complete, and
``manifest.json`` gets the dataset's section only at the very end, so an interrupted run leaves no
table that loads as complete and no manifest that describes it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any, Callable, Iterator

from tqdm.auto import tqdm

from vlkit.data.arrow import open_arrow
from vlkit.data.convert.emit import FORMAT_DIRS, EntryFunction, JsonEmitter
from vlkit.data.convert.images import CORRUPT, MISSING, ImageReader
from vlkit.data.convert.inputs import RawInputs
from vlkit.data.convert.jobs import Plan, Row, TableJob
from vlkit.data.convert.manifest import describe_sources, forget_dataset, record_dataset, write_json_atomically
from vlkit.data.convert.writer import BATCH_BYTES, BATCH_ROWS, ArrowTableWriter

log = logging.getLogger(__name__)

FORMATS = ("arrow", "albef", "lxmert")
SHARD_SIZE = 100_000
"""Inputs per shard of the sharded datasets (SBU, Conceptual Captions), as the reference."""
READ_AHEAD = 64
"""Rows whose images the reader threads fetch ahead of the writer (bounds the images in memory)."""
DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


@dataclass
class Options:
    """What a conversion may be told besides its dataset, ``--root`` and ``--out``."""

    formats: tuple[str, ...] = ("arrow",)
    paths: dict[str, str] = field(default_factory=dict)
    """Input key → path, for raw files kept somewhere other than the default place under root."""
    shard_size: int = SHARD_SIZE
    verify_images: bool = True
    resume: bool = False
    progress: bool = True
    seed: int = 0
    """Seed of the VQAv2 ``rest_val`` draw."""
    min_answer_count: int = 9
    rest_val_images: int = 1000
    normalize_raw_answers: bool = False
    """Count the ten VQA answers after normalising them (the reference counts them raw)."""
    workers: int = DEFAULT_WORKERS
    """Threads reading and decoding images (1: read them in the main thread)."""
    batch_rows: int = BATCH_ROWS
    batch_bytes: int = BATCH_BYTES

    def fingerprint_fields(self) -> dict[str, Any]:
        """The options that change what is written (not how it is reported)."""
        values = asdict(self)
        for key in ("resume", "progress", "workers", "batch_rows", "batch_bytes"):
            values.pop(key)
        values["formats"] = sorted(values["formats"])
        return values


@dataclass
class Converter:
    """One raw dataset: its raw inputs (key → default path under root), how it plans its tables,
    and the json formats it can emit besides Arrow (format → row → entries)."""

    name: str
    summary: str
    inputs: dict[str, str]
    plan: Callable[[RawInputs, Options], Plan]
    json_formats: dict[str, EntryFunction] = field(default_factory=dict)
    remember_images: bool = False

    @property
    def formats(self) -> tuple[str, ...]:
        return ("arrow", *self.json_formats)


def state_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, f".{name}.convert_state.json")


def _load_state(path: str, fingerprint: str, resume: bool) -> dict[str, Any]:
    if resume and os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        if state.get("fingerprint") == fingerprint:
            return state
        log.warning("%s: options or source files changed since the interrupted run; starting over", path)
    return {"fingerprint": fingerprint, "units": {}}


def _write_side_files(out_dir: str, files: dict[str, dict[str, Any]], formats: tuple[str, ...]) -> list[str]:
    written = []
    for fmt, named in files.items():
        if fmt not in formats:
            continue
        directory = out_dir if fmt == "arrow" else os.path.join(out_dir, FORMAT_DIRS[fmt])
        for name, value in named.items():
            path = os.path.join(directory, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if isinstance(value, bytes):
                with open(path + ".tmp", "wb") as handle:
                    handle.write(value)
                os.replace(path + ".tmp", path)
            else:
                write_json_atomically(path, value)
            written.append(os.path.relpath(path, out_dir))
    return written


class _Run:
    """The state of one conversion while its tables are written."""

    def __init__(self, converter: Converter, root: str, out_dir: str, options: Options, state: dict, state_file: str):
        self.converter = converter
        self.out_dir = out_dir
        self.options = options
        self.state = state
        self.state_file = state_file
        self.reader = ImageReader(options.verify_images, converter.remember_images)
        self.emitters = [JsonEmitter(out_dir, fmt, converter.json_formats[fmt], root)
                         for fmt in options.formats if fmt in converter.json_formats]

    def emit(self, job: TableJob, row: Row) -> None:
        for emitter in self.emitters:
            emitter.add(job, row)

    def run_job(self, job: TableJob) -> None:
        rows = job.rows()
        seen: set[str] = set()
        with tqdm(total=job.total, desc=job.name, unit="row", dynamic_ncols=True,
                  disable=not self.options.progress) as bar:
            for unit, start, stop in job.units():
                done = self.state["units"].get(unit)
                table = os.path.join(self.out_dir, f"{unit}.arrow")
                if done is not None and (job.schema is None or "arrow" not in self.options.formats or os.path.isfile(table)):
                    self.replay(job, islice(rows, stop - start), start, done, seen, bar)
                else:
                    self.state["units"][unit] = self.write_unit(job, unit, islice(rows, stop - start), start, seen, bar)
                    write_json_atomically(self.state_file, self.state)

    def replay(self, job: TableJob, rows, start: int, done: dict, seen: set, bar) -> None:
        """A unit finished by an earlier run: feed its valid rows to the json emitters only."""
        bad = {item["index"] for item in done["skipped"]}
        for position, row in enumerate(rows, start):
            if position not in bad:
                seen.add(row.key)
                self.emit(job, row)
            bar.update(1)

    def read_row(self, row: Row) -> tuple[dict[str, bytes | None], list[dict]]:
        """The encoded bytes of each image of ``row``, and what is wrong with those that are bad."""
        images, problems = {}, []
        for column, image_path in row.images.items():
            images[column], problem = self.reader.read(image_path)
            if problem:
                problems.append({"column": column, "path": image_path, "reason": problem[0], "detail": problem[1]})
        return images, problems

    def read_rows(self, rows: Iterator[Row]) -> Iterator[tuple[Row, dict, list]]:
        """``(row, images, problems)`` in order; with ``workers > 1`` the images of the next
        ``READ_AHEAD`` rows are read and decoded by a thread pool (PIL decodes without the GIL)."""
        if self.options.workers <= 1:
            for row in rows:
                yield (row, *self.read_row(row))
            return
        with ThreadPoolExecutor(self.options.workers) as pool:
            while chunk := list(islice(rows, READ_AHEAD)):
                for row, (images, problems) in zip(chunk, pool.map(self.read_row, chunk)):
                    yield row, images, problems

    def write_unit(self, job: TableJob, unit: str, rows, start: int, seen: set, bar) -> dict[str, Any]:
        writing = job.schema is not None and "arrow" in self.options.formats
        path = os.path.join(self.out_dir, f"{unit}.arrow")
        writer = ArrowTableWriter(path, job.schema, self.options.batch_rows, self.options.batch_bytes) if writing else None
        counts: Counter[str] = Counter()
        skipped = []
        inputs = 0
        try:
            for position, (row, images, problems) in enumerate(self.read_rows(rows), start):
                inputs += 1
                bar.update(1)
                counts["images_present"] += len(row.images) - len(problems)
                counts.update(problem["reason"] for problem in problems)
                if problems:
                    reason = MISSING if any(p["reason"] == MISSING for p in problems) else CORRUPT
                    skipped.append({"table": unit, "index": position, "key": row.key, "reason": reason, "images": problems})
                    continue
                if row.key in seen:
                    counts["duplicate_ids"] += 1
                seen.add(row.key)
                if writer is not None:
                    writer.add({**row.values, **images})
                self.emit(job, row)
            if writer is not None:
                writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        rows_written = inputs - len(skipped)
        if writer is not None:
            verify_table(path, job.schema, rows_written)
        return {
            "file": f"{unit}.arrow" if writer is not None else None,
            "inputs": inputs, "rows": rows_written, "skipped": skipped,
            "images_present": counts["images_present"], "images_missing": counts[MISSING],
            "images_corrupt": counts[CORRUPT], "duplicate_ids": counts["duplicate_ids"],
        }


def verify_table(path: str, schema, rows: int) -> None:
    """Re-open a written table: it must load, with ``schema`` and ``rows`` rows."""
    table = open_arrow(path)
    if table.num_rows != rows or not table.schema.equals(schema):
        raise RuntimeError(f"{path}: wrote {table.num_rows} rows with schema {table.schema}, expected {rows} rows "
                           f"with {schema}; the output folder may be shared with another conversion")


def run_conversion(converter: Converter, root: str, out_dir: str, options: Options) -> dict[str, Any]:
    """Convert ``converter``'s raw data under ``root`` into ``out_dir``; returns the manifest section."""
    unsupported = [fmt for fmt in options.formats if fmt not in converter.formats]
    if unsupported:
        raise ValueError(f"{converter.name} cannot emit format(s) {unsupported}; it supports {list(converter.formats)}")
    if options.shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {options.shard_size}")
    inputs = RawInputs(converter.name, root, converter.inputs, options.paths)
    plan = converter.plan(inputs, options)
    os.makedirs(out_dir, exist_ok=True)
    sources = describe_sources(inputs.paths)
    fingerprint = hashlib.sha256(json.dumps(
        [converter.name, options.fingerprint_fields(), {k: v.get("sha256", v.get("files")) for k, v in sources.items()}],
        sort_keys=True).encode()).hexdigest()
    state_file = state_path(out_dir, converter.name)
    state = _load_state(state_file, fingerprint, options.resume)
    resumed = sorted(state["units"])
    forget_dataset(out_dir, converter.name)
    write_json_atomically(state_file, state)

    run = _Run(converter, inputs.root, out_dir, options, state, state_file)
    try:
        for job in plan.jobs:
            run.run_job(job)
        json_files = {}
        for emitter in run.emitters:
            json_files.update(emitter.close())
    except BaseException:
        for emitter in run.emitters:
            emitter.abort()
        raise
    side_files = _write_side_files(out_dir, plan.files, options.formats)
    section = {"description": converter.summary,
               **_section(inputs, options, sources, state["units"], json_files, side_files, plan.report, resumed)}
    recorded = record_dataset(out_dir, converter.name, section)
    os.remove(state_file)
    return recorded


def _section(inputs: RawInputs, options: Options, sources: dict, units: dict, json_files: dict, side_files: list,
             report: dict, resumed: list) -> dict[str, Any]:
    tables = {name: {k: v for k, v in unit.items() if k != "skipped"} | {"skipped": len(unit["skipped"])}
              for name, unit in units.items()}
    skipped = [item for unit in units.values() for item in unit["skipped"]]
    totals = Counter()
    for unit in tables.values():
        totals.update({k: unit[k] for k in ("inputs", "rows", "skipped", "images_present", "images_missing",
                                            "images_corrupt", "duplicate_ids")})
    return {
        "root": inputs.root,
        "options": {k: v for k, v in asdict(options).items() if k not in ("progress", "workers", "batch_rows", "batch_bytes")},
        "sources": sources,
        "tables": tables,
        "totals": dict(totals),
        "skipped_by_reason": dict(Counter(item["reason"] for item in skipped)),
        "skipped": skipped,
        "json_files": json_files,
        "side_files": side_files,
        "resumed_tables": resumed,
        **report,
    }

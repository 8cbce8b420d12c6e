"""Streaming the json annotation formats (ALBEF / GRIT-VLP, LXMERT) next to the Arrow tables.

A converter maps each valid row to ``(file name, entry)`` pairs; ``JsonEmitter`` appends every
entry to its file as it comes (a json list written incrementally, so no file is held in memory)
and, as the Arrow writer, renames a file into place only once it is complete.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable

from vlkit.data.convert.jobs import Row, TableJob
from vlkit.data.convert.writer import PARTIAL_SUFFIX

EntryFunction = Callable[[TableJob, Row, str], Iterable[tuple[str, Any]]]
"""``(job, row, root) -> (file name, entry) pairs``; ``root`` is ``--root``, for relative image paths."""
FORMAT_DIRS = {"albef": "albef", "lxmert": "lxmert"}
"""Sub-folder of ``--out`` that each json format is written to."""


class JsonListWriter:
    """A json list written one entry at a time to ``path.partial``, renamed to ``path`` on close."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self.count = 0
        self._handle = open(path + PARTIAL_SUFFIX, "w", encoding="utf-8")
        self._handle.write("[")

    def add(self, entry: Any) -> None:
        self._handle.write(("\n" if self.count == 0 else ",\n") + json.dumps(entry, ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        self._handle.write("\n]\n")
        self._handle.close()
        os.replace(self.path + PARTIAL_SUFFIX, self.path)

    def abort(self) -> None:
        self._handle.close()
        os.remove(self.path + PARTIAL_SUFFIX)


class JsonEmitter:
    """Every json file of one format for one conversion; ``entries(job, row, root)`` says what a row adds."""

    def __init__(self, out_dir: str, fmt: str, entries: EntryFunction, root: str):
        self.root = root
        self.directory = os.path.join(out_dir, FORMAT_DIRS[fmt])
        self.fmt = fmt
        self.entries = entries
        self._writers: dict[str, JsonListWriter] = {}

    def add(self, job: TableJob, row: Row) -> None:
        for name, entry in self.entries(job, row, self.root):
            if name not in self._writers:
                self._writers[name] = JsonListWriter(os.path.join(self.directory, name))
            self._writers[name].add(entry)

    def close(self) -> dict[str, int]:
        """Finish every file; returns entry counts by path relative to ``--out``."""
        counts = {}
        for name, writer in self._writers.items():
            writer.close()
            counts[f"{FORMAT_DIRS[self.fmt]}/{name}"] = writer.count
        return counts

    def abort(self) -> None:
        for writer in self._writers.values():
            writer.abort()


def relative_image(path: str, root: str) -> str:
    """An image path as written in the json files: relative to ``root`` (use ``--root`` as the
    ``image_root`` / ``vqa_root`` / ``vg_root`` of the config) when it lies below it, else absolute."""
    relative = os.path.relpath(path, root)
    return path if relative.startswith("..") else relative

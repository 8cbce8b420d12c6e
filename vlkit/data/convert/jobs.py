"""What a converter plans: the tables to write, each a stream of rows whose images are file paths."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow as pa


@dataclass
class Row:
    """One output row before its images are read.

    ``key`` names the row in reports (image id, identifier); ``images`` maps each binary column to
    the raw image file; ``values`` holds every other column; ``extra`` holds what only the json
    emitters read (e.g. the ten raw VQA answers).
    """

    key: str
    images: dict[str, str]
    values: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TableJob:
    """One table (or family of shards) to write.

    ``rows()`` yields one ``Row`` per valid annotation input, in a deterministic order, and
    ``total`` is their number. With ``shard_size`` the inputs are dealt into files
    ``{name}_{k}`` of ``shard_size`` inputs each (rows whose images are bad are left out of their
    shard); without, the table is ``name``. ``schema=None`` checks the images without writing a
    table (the ImageFolder passthrough). ``split`` (with ``name``) tells the json emitters which
    file a row belongs to.
    """

    name: str
    schema: pa.Schema | None
    rows: Callable[[], Iterator[Row]]
    total: int
    split: str
    shard_size: int | None = None

    def units(self) -> list[tuple[str, int, int]]:
        """``(table name, first input, end input)`` of every file this job writes."""
        if not self.shard_size:
            return [(self.name, 0, self.total)]
        starts = range(0, max(self.total, 1), self.shard_size)
        return [(f"{self.name}_{k}", start, min(start + self.shard_size, self.total)) for k, start in enumerate(starts)]


@dataclass
class Plan:
    """Everything one conversion produces besides the images it reads.

    ``files`` are small side files (relative path → JSON-able value, or bytes) written beside the
    tables, e.g. the VQA answer vocabulary; ``report`` holds dataset-level counts for the manifest
    (e.g. questions dropped for want of an in-vocabulary answer).
    """

    jobs: list[TableJob]
    files: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

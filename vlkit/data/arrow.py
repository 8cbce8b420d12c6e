"""Memory-mapped Arrow tables (ViLT layout, fact sheet §4.1) viewed as one sequence of rows.

Files are opened with ``pa.memory_map`` and read with ``pa.ipc.open_file(...).read_all()``, so
column data stays in the page cache and is shared by every process and data-loader worker.
Nothing here turns a whole column into Python objects: per-row lengths come from Arrow list
offsets as numpy arrays, and single values are fetched by row through precomputed chunk offsets.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

ROWS_PER_DISTINCT_STEP = 65536
"""Rows handled per step when counting distinct list values (bounds the temporary memory)."""


class MissingArrowFilesError(FileNotFoundError):
    """None of the Arrow files a dataset split needs exists under ``data_root``."""


def arrow_path(data_root: str, name: str) -> str:
    """Where the table ``name`` lives: ``{data_root}/{name}.arrow``."""
    return os.path.join(data_root, f"{name}.arrow")


def open_arrow(path: str) -> pa.Table:
    """Open one Arrow IPC file memory-mapped (no column data is copied into memory)."""
    try:
        return pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
    except pa.ArrowInvalid as err:
        raise ValueError(
            f"{path} is not a readable Arrow IPC file ({err}); rewrite it in the ViLT Arrow "
            f"layout or remove it"
        ) from err


def _missing_files_message(data_root: str, names: Sequence[str], what: str) -> str:
    expected = ", ".join(arrow_path(data_root, name) for name in names)
    root_hint = "data_root is not set; " if not data_root else ""
    return (
        f"no Arrow file of {what} was found: expected {expected}. {root_hint}Set data_root to the "
        f"folder that holds these files, or for a first try generate a synthetic set with "
        f"`vlkit data synth --out DIR` and pass data_root=DIR."
    )


class ArrowTables:
    """Several memory-mapped Arrow files, concatenated lazily into one row space.

    Global row ``r`` belongs to table ``t`` when ``row_starts[t] <= r < row_starts[t + 1]``; each
    row knows the name of its file (``table_name``). Missing files are skipped with one warning
    listing them; if none exists a ``MissingArrowFilesError`` names the expected paths.
    Pickling reopens the files by path, so a copy in another process maps the same pages.
    """

    def __init__(self, data_root: str, names: Sequence[str], what: str = "this dataset"):
        self.data_root = data_root
        self.what = what
        present = [name for name in names if os.path.isfile(arrow_path(data_root, name))]
        missing = [arrow_path(data_root, name) for name in names if name not in present]
        if not present:
            raise MissingArrowFilesError(_missing_files_message(data_root, names, what))
        if missing:
            logger.warning("%s: %d Arrow file(s) missing, continuing without them: %s",
                           what, len(missing), ", ".join(missing))
        self.names = present
        self._tables = [open_arrow(arrow_path(data_root, name)) for name in present]
        self.row_starts = np.cumsum([0] + [table.num_rows for table in self._tables], dtype=np.int64)
        # All columns of a table read from an IPC file share its record-batch layout.
        self._chunk_starts = [
            np.cumsum([0] + [len(chunk) for chunk in table.column(0).chunks], dtype=np.int64)
            if table.num_columns else np.zeros(1, np.int64)
            for table in self._tables
        ]

    def __reduce__(self):
        return ArrowTables, (self.data_root, self.names, self.what)

    @property
    def num_rows(self) -> int:
        return int(self.row_starts[-1])

    def require_columns(self, columns: Sequence[str]) -> None:
        """Fail, naming the file and the columns, unless every table holds ``columns``."""
        for name, table in zip(self.names, self._tables):
            lacking = [column for column in columns if column not in table.column_names]
            if lacking:
                raise ValueError(
                    f"{arrow_path(self.data_root, name)} lacks column(s) {lacking} needed by "
                    f"{self.what} (it has {table.column_names}); rewrite it in the ViLT Arrow layout"
                )

    def has_column(self, column: str) -> bool:
        """Whether every table holds ``column``."""
        return all(column in table.column_names for table in self._tables)

    def locate(self, row: int) -> tuple[int, int]:
        """``(table position, row within that table)`` of global ``row``."""
        if not 0 <= row < self.num_rows:
            raise IndexError(f"row {row} is outside [0, {self.num_rows}) of {self.what}")
        table = int(np.searchsorted(self.row_starts, row, side="right")) - 1
        return table, row - int(self.row_starts[table])

    def table_name(self, row: int) -> str:
        """Name of the file (without ``.arrow``) that holds global ``row``."""
        return self.names[self.locate(row)[0]]

    def value(self, column: str, row: int) -> Any:
        """One cell as a Python value, fetched without touching any other row."""
        table, local = self.locate(row)
        starts = self._chunk_starts[table]
        chunk = int(np.searchsorted(starts, local, side="right")) - 1
        return self._tables[table].column(column).chunk(chunk)[local - int(starts[chunk])].as_py()

    def list_lengths(self, column: str) -> np.ndarray:
        """Length of the list in ``column`` for every row (0 for null), from the list offsets."""
        lengths = [
            pc.list_value_length(table.column(column)).fill_null(0).to_numpy().astype(np.int64)
            for table in self._tables
        ]
        return np.concatenate(lengths)

    def distinct_list_lengths(self, column: str) -> np.ndarray:
        """Number of distinct values in the list in ``column`` for every row (0 for null).

        Computed with Arrow's hash grouping a slice of rows at a time, so the temporary memory is
        bounded by ``ROWS_PER_DISTINCT_STEP`` rows, not by the column.
        """
        counts = []
        for table in self._tables:
            for chunk in table.column(column).chunks:
                for start in range(0, len(chunk), ROWS_PER_DISTINCT_STEP):
                    part = chunk.slice(start, ROWS_PER_DISTINCT_STEP)
                    pairs = pa.table({"row": pc.list_parent_indices(part), "value": pc.list_flatten(part)})
                    distinct_rows = pairs.group_by(["row", "value"]).aggregate([])["row"]
                    counts.append(np.bincount(distinct_rows.to_numpy(), minlength=len(part)))
        return np.concatenate(counts).astype(np.int64) if counts else np.zeros(0, np.int64)

    def flat_values(self, column: str, depth: int = 1) -> list:
        """Every value of a list column (``depth`` levels of lists flattened), all tables in order."""
        values: list = []
        for table in self._tables:
            flat = table.column(column)
            for _ in range(depth):
                flat = pc.list_flatten(flat)
            values += flat.to_pylist()
        return values

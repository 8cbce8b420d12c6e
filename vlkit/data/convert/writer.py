"""Streamed, atomic Arrow IPC writing: rows are buffered into small record batches and written
as they come, to ``NAME.arrow.partial``; only a finished table is renamed to ``NAME.arrow``, so an
interrupted conversion never leaves a file that loads as a complete table."""
from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

PARTIAL_SUFFIX = ".partial"
BATCH_ROWS = 256
"""Rows per record batch at most."""
BATCH_BYTES = 32 * 2**20
"""Image bytes per record batch at most (bounds the memory a batch of large images takes)."""


class ArrowTableWriter:
    """Writes one Arrow IPC file (the reference's ``RecordBatchFileWriter`` format) row by row.

    ``add(row)`` buffers a row (column → value); a batch is flushed every ``batch_rows`` rows or
    ``batch_bytes`` bytes of binary cells. ``close()`` flushes, closes and renames the file into
    place; ``abort()`` removes the partial file.
    """

    def __init__(self, path: str, schema: pa.Schema, batch_rows: int = BATCH_ROWS, batch_bytes: int = BATCH_BYTES):
        self.path = path
        self.partial = path + PARTIAL_SUFFIX
        self.schema = schema
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.rows = 0
        self._binary = [f.name for f in schema if pa.types.is_binary(f.type)]
        self._buffer: dict[str, list] = {name: [] for name in schema.names}
        self._buffered_bytes = 0
        self._sink = pa.OSFile(self.partial, "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)

    def add(self, row: dict[str, Any]) -> None:
        for name in self.schema.names:
            self._buffer[name].append(row[name])
        self._buffered_bytes += sum(len(row[name] or b"") for name in self._binary)
        self.rows += 1
        if len(self._buffer[self.schema.names[0]]) >= self.batch_rows or self._buffered_bytes >= self.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._buffer[self.schema.names[0]]:
            self._writer.write_batch(pa.RecordBatch.from_pydict(self._buffer, schema=self.schema))
        self._buffer = {name: [] for name in self.schema.names}
        self._buffered_bytes = 0

    def close(self) -> None:
        """Write what is buffered, finish the file and move it to its final name."""
        self._flush()
        self._writer.close()
        self._sink.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        """Drop the partial file (the final name is left as it was)."""
        try:
            self._writer.close()
            self._sink.close()
        finally:
            if os.path.exists(self.partial):
                os.remove(self.partial)


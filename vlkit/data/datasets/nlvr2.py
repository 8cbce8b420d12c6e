"""NLVR2 (fact sheet §4.2, §4.4): a sentence about a pair of images, true or false."""
from __future__ import annotations

from typing import Any

from vlkit.data.datasets.base import ArrowDataset


class Nlvr2Dataset(ArrowDataset):
    """NLVR2 statements; train ``nlvr2_train``, val and test ``nlvr2_dev`` + ``nlvr2_test1``.

    Both evaluation splits mix dev and test-P rows, as the reference; ``table_name`` tells them
    apart so metrics can be reported per file. Negative images, when asked for, come from
    ``image_0`` of other rows.

    Sample keys: ``image_0``, ``image_1`` instead of ``image``; ``answers`` 1 for "True", else 0;
    ``table_name``.
    """

    name = "nlvr2"
    text_column = "questions"
    image_columns = ("image_0", "image_1")
    task_columns = ("answers",)
    split_tables = {
        "train": ["nlvr2_train"],
        "val": ["nlvr2_dev", "nlvr2_test1"],
        "test": ["nlvr2_dev", "nlvr2_test1"],
    }

    def task_fields(self, row: int, slot: int) -> dict[str, Any]:
        return {
            "answers": int(self.tables.value("answers", row)[slot] == "True"),
            "table_name": self.tables.table_name(row),
        }

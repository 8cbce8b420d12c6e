"""SNLI-VE (METER's layout, meter_elip.md §4.1): does the image entail a hypothesis?"""
from __future__ import annotations

from typing import Any

from vlkit.data.datasets.base import ArrowDataset


class SnliVeDataset(ArrowDataset):
    """SNLI-VE hypotheses; train ``snli_train``, val and test ``snli_dev`` + ``snli_test``.

    Column ``sentences`` holds ``[premise, hypothesis]`` pairs per image; only the stripped
    hypothesis is the text (the premise is a caption of the image, never shown to the model, as in
    METER). ``labels`` holds 0 contradiction, 1 neutral, 2 entailment.

    Extra sample keys: ``labels``, ``table_name`` (dev and test rows are mixed in evaluation).
    """

    name = "snli"
    text_column = "sentences"
    task_columns = ("labels",)
    split_tables = {
        "train": ["snli_train"],
        "val": ["snli_dev", "snli_test"],
        "test": ["snli_dev", "snli_test"],
    }

    def row_texts(self, row: int) -> list[str]:
        pairs = self.tables.value(self.text_column, row) or []
        return [(pair if isinstance(pair, str) else pair[1]).strip() for pair in pairs]

    def task_fields(self, row: int, slot: int) -> dict[str, Any]:
        return {"labels": int(self.tables.value("labels", row)[slot]), "table_name": self.tables.table_name(row)}

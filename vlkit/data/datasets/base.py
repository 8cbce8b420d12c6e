"""``ArrowDataset``: samples from ViLT-layout Arrow tables (fact sheet §4.5), shared by every task.

Indexing. Without ``image_only`` one sample is one text (caption / question / hypothesis) of one
image row, so an epoch visits texts, as in the reference; with it, one sample is one image row. The
index is two numpy arrays (row, text slot) built from Arrow list lengths: no Python object per
text exists, so forked workers share it and host memory does not grow with workers.

Sample keys: ``__getitem__`` takes an int or a ``SampleKey`` ``(index, seed)`` and runs all of its
randomness (augmentation, negatives, replacement of broken images) under ``seeded(seed)``.

Broken images. An image that is missing, empty or cannot be decoded is logged (table, row,
image_id), counted, and replaced by another sample (or negative) drawn with the seeded RNG; after
``MAX_BROKEN_PER_SAMPLE`` failures for one sample the dataset gives up with an error. The count travels
in the sample as ``num_skipped_images``.
"""
from __future__ import annotations

import io
import logging
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from vlkit.data.arrow import ArrowTables
from vlkit.data.tokenizer import encode_text
from vlkit.data.transforms import DETERMINISTIC_TRANSFORMS, build_transform
from vlkit.utils.seeding import SampleKey, seeded, split_key

logger = logging.getLogger(__name__)

MAX_BROKEN_PER_SAMPLE = 50
"""Broken images met while building one sample after which a dataset stops replacing them and raises."""
MAX_NEGATIVE_TEXT_DRAWS = 20
"""Draws of a negative text before giving up because every text equals one of the positive's."""
SPLITS = ("train", "val", "test")


class SplitUnavailableError(ValueError):
    """The dataset has no such split (e.g. VG has no validation data)."""


class BrokenImageError(ValueError):
    """An image cell is missing, empty or not decodable."""


class BrokenImageCounter:
    """Broken images met while building one sample; gives up after ``MAX_BROKEN_PER_SAMPLE``.

    ``reported`` (shared by a dataset's counters) holds the images already logged: each broken
    image is warned about once per process, and counted every time.
    """

    def __init__(self, label: str, reported: set[str]):
        self.label = label
        self.reported = reported
        self.count = 0

    def record(self, err: BrokenImageError) -> None:
        """Log ``err`` (the first time), count it, and raise once too many images in a row were broken."""
        if str(err) not in self.reported:
            self.reported.add(str(err))
            logger.warning("%s; drawing a replacement (counted in num_skipped_images)", err)
        self.count += 1
        if self.count >= MAX_BROKEN_PER_SAMPLE:
            raise RuntimeError(
                f"{self.label}: {self.count} images in a row could not be decoded while building one "
                f"sample (last: {err}); the data looks damaged: check the files under data_root"
            ) from err


class ArrowDataset(Dataset):
    """Base of every Arrow-backed dataset; subclasses declare their files and columns.

    Subclass attributes: ``name`` (registry key), ``split_tables`` (split → Arrow file names; a
    split absent from it does not exist), ``text_column`` (a list column), ``image_columns``
    (the first one also feeds negative images) and ``dedupe_texts`` (drop repeated texts within a
    row, keeping the first occurrence). ``task_fields`` adds per-sample task targets.
    """

    name: ClassVar[str] = ""
    split_tables: ClassVar[dict[str, Sequence[str]]] = {}
    text_column: ClassVar[str] = "caption"
    image_columns: ClassVar[tuple[str, ...]] = ("image",)
    dedupe_texts: ClassVar[bool] = False
    task_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        split: str,
        *,
        data_root: str,
        tokenizer: PreTrainedTokenizerBase,
        transform_keys: Sequence[str],
        image_size: int,
        max_text_len: int = 40,
        draw_false_image: int = 0,
        draw_false_text: int = 0,
        image_only: bool = False,
        cache_images: bool = False,
    ):
        self.split = split
        self.label = f"dataset {self.name!r} split {split!r}"
        self.tables = self.open_tables(split, data_root)
        if not transform_keys:
            raise ValueError(f"{self.label}: transform_keys is empty; give at least one, e.g. ['mae']")
        transforms = [build_transform(key, image_size) for key in transform_keys]
        self.transform = transforms[0]  # the model reads one view: the first key's (as the reference)
        if cache_images and transform_keys[0] not in DETERMINISTIC_TRANSFORMS:
            raise ValueError(
                f"{self.label}: cache_images=True keeps each image as first transformed, but transform "
                f"{transform_keys[0]!r} is random; use one of {sorted(DETERMINISTIC_TRANSFORMS)} or cache_images=False"
            )
        self._image_cache: dict[tuple[str, int], torch.Tensor] | None = {} if cache_images else None
        self.tokenizer = tokenizer
        self.max_text_len = max_text_len
        self.draw_false_image = draw_false_image
        self.draw_false_text = draw_false_text
        self.image_only = image_only
        self._reported_broken: set[str] = set()
        self._build_index()
        self._check_negatives_possible()

    def open_tables(self, split: str, data_root: str) -> ArrowTables:
        """The split's tables (Arrow files under ``data_root``), with the columns checked."""
        tables = ArrowTables(data_root, self.table_names(split), what=self.label)
        tables.require_columns([self.text_column, *self.image_columns, *self.task_columns])
        return tables

    def texts_per_row(self) -> np.ndarray:
        """How many texts each row holds (distinct ones when ``dedupe_texts``)."""
        if self.dedupe_texts:
            return self.tables.distinct_list_lengths(self.text_column)
        return self.tables.list_lengths(self.text_column)

    def _build_index(self) -> None:
        """Row and slot of every text, and of every sample (one per text, or per row when ``image_only``)."""
        texts_per_row = self.texts_per_row()
        self.row_text_starts = np.concatenate([[0], np.cumsum(texts_per_row)]).astype(np.int64)
        self.text_rows = np.repeat(np.arange(len(texts_per_row), dtype=np.int64), texts_per_row)
        self.text_slots = (np.arange(len(self.text_rows), dtype=np.int64) - self.row_text_starts[self.text_rows]).astype(np.int32)
        if self.image_only:
            self.sample_rows = np.arange(self.tables.num_rows, dtype=np.int64)
            self.sample_slots = np.full(self.tables.num_rows, -1, dtype=np.int32)
        else:
            self.sample_rows, self.sample_slots = self.text_rows, self.text_slots

    @classmethod
    def from_config(
        cls,
        split: str,
        cfg: Any,
        tokenizer: PreTrainedTokenizerBase,
        transform_keys: Sequence[str] | None = None,
    ) -> "ArrowDataset":
        """Build from a run config; ``transform_keys`` defaults to the split's keys in ``cfg``."""
        if transform_keys is None:
            transform_keys = cfg.train_transform_keys if split == "train" else cfg.val_transform_keys
        return cls(
            split,
            data_root=cfg.data_root,
            tokenizer=tokenizer,
            transform_keys=list(transform_keys),
            image_size=cfg.image_size,
            max_text_len=cfg.max_text_len,
            draw_false_image=cfg.draw_false_image,
            draw_false_text=cfg.draw_false_text,
            image_only=cfg.image_only,
            cache_images=cfg.cache_images,
            **cls.config_options(cfg),
        )

    @classmethod
    def config_options(cls, cfg: Any) -> dict[str, Any]:
        """Constructor options of this dataset class read from ``cfg`` (none in the base)."""
        return {}

    def table_names(self, split: str) -> list[str]:
        """Arrow file names (without ``.arrow``) of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for dataset {self.name!r}; valid: {list(SPLITS)}")
        if split not in self.split_tables:
            raise SplitUnavailableError(
                f"dataset {self.name!r} has no {split!r} split (it has {sorted(self.split_tables)}); "
                f"leave it out of the {split} datasets"
            )
        return list(self.split_tables[split])

    def _check_negatives_possible(self) -> None:
        if self.draw_false_image and self.tables.num_rows < 2:
            raise ValueError(
                f"{self.label} has {self.tables.num_rows} image row(s); negative images need at least "
                f"2: set draw_false_image=0 or add data"
            )
        rows_with_texts = int(np.count_nonzero(np.diff(self.row_text_starts)))
        if self.draw_false_text and rows_with_texts < 2:
            raise ValueError(
                f"{self.label} has texts in {rows_with_texts} row(s); negative texts must come from "
                f"another row: set draw_false_text=0 or add data"
            )

    def __len__(self) -> int:
        return len(self.sample_rows)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        index, seed = split_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside [0, {len(self)}) of {self.label}")
        with seeded(seed):
            sample = self._sample_replacing_broken(index)
        sample["seed"] = seed
        return sample

    # --- building a sample ---

    def _sample_replacing_broken(self, index: int) -> dict[str, Any]:
        broken = BrokenImageCounter(self.label, self._reported_broken)
        while True:
            try:
                sample = self.build_sample(index, broken)
            except BrokenImageError as err:
                broken.record(err)
                index = self._draw(len(self))
                continue
            sample["num_skipped_images"] = broken.count
            return sample

    def build_sample(self, index: int, broken: BrokenImageCounter) -> dict[str, Any]:
        """The sample at ``index``; raises ``BrokenImageError`` if one of its own images is broken
        (broken negative images are replaced here and recorded in ``broken``)."""
        row = int(self.sample_rows[index])
        slot = self.sample_slot(index, row)
        sample: dict[str, Any] = {column: self.load_image(column, row) for column in self.image_columns}
        sample.update(img_index=row, cap_index=slot, raw_index=index)
        if not self.image_only:
            sample.update(self._text_fields("text", self.row_texts(row)[slot]))
        for k in range(self.draw_false_image):
            sample[f"false_image_{k}"] = self._negative_image(row, broken)
        for k in range(self.draw_false_text):
            sample.update(self._text_fields(f"false_text_{k}", self._negative_text(row)))
        sample.update(self.task_fields(row, slot))
        return sample

    def sample_slot(self, index: int, row: int) -> int:
        """The text slot of sample ``index`` (-1 with ``image_only``)."""
        return int(self.sample_slots[index])

    def task_fields(self, row: int, slot: int) -> dict[str, Any]:
        """Task targets of text ``slot`` of ``row`` (none for caption datasets)."""
        return {}

    def row_texts(self, row: int) -> list[str]:
        """The texts of ``row``, in file order (repeats dropped when ``dedupe_texts``)."""
        texts = self.tables.value(self.text_column, row) or []
        return list(dict.fromkeys(texts)) if self.dedupe_texts else texts

    def _text_fields(self, key: str, text: str) -> dict[str, Any]:
        encoded = encode_text(self.tokenizer, text, self.max_text_len)
        return {key: text, **{f"{key}_{field}": tensor for field, tensor in encoded.items()}}

    def load_image(self, column: str, row: int) -> torch.Tensor:
        """The image in ``column`` of ``row``, transformed (kept in memory with ``cache_images``)."""
        if self._image_cache is None:
            return self.transform(self.decode_image(column, row))
        key = (column, row)
        if key not in self._image_cache:
            self._image_cache[key] = self.transform(self.decode_image(column, row))
        return self._image_cache[key]

    def decode_image(self, column: str, row: int) -> Image.Image:
        """The RGB image in ``column`` of ``row``; ``BrokenImageError`` if it cannot be decoded."""
        data = self.tables.value(column, row)
        try:
            if not data:
                raise ValueError("the image cell is empty")
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception as err:  # PIL raises many types on broken files; all mean "not decodable"
            table, local_row = self.tables.locate(row)
            raise BrokenImageError(
                f"{self.label}: cannot decode {column!r} of table {self.tables.names[table]!r} row "
                f"{local_row} (image_id {self._image_id(row)!r}): {err}"
            ) from err
        return image

    def _image_id(self, row: int) -> Any:
        for column in ("image_id", "identifier"):
            if self.tables.has_column(column):
                return self.tables.value(column, row)
        return None

    # --- negatives ---

    @staticmethod
    def _draw(n: int) -> int:
        return int(torch.randint(n, ()).item())

    def _negative_image(self, row: int, broken: BrokenImageCounter) -> torch.Tensor:
        """The image of a uniformly drawn row other than ``row``, replacing broken ones."""
        while True:
            other = self._draw(self.tables.num_rows - 1)
            if other >= row:
                other += 1
            try:
                return self.load_image(self.image_columns[0], other)
            except BrokenImageError as err:
                broken.record(err)

    def _negative_text(self, row: int) -> str:
        """A uniformly drawn text of another row that is not one of ``row``'s own texts."""
        start, end = int(self.row_text_starts[row]), int(self.row_text_starts[row + 1])
        own = set(self.row_texts(row))
        for _ in range(MAX_NEGATIVE_TEXT_DRAWS):
            position = self._draw(len(self.text_rows) - (end - start))
            position += (end - start) * (position >= start)
            other_row, other_slot = int(self.text_rows[position]), int(self.text_slots[position])
            text = self.row_texts(other_row)[other_slot]
            if text not in own:
                return text
        raise RuntimeError(
            f"{self.label}: {MAX_NEGATIVE_TEXT_DRAWS} negative texts drawn for row {row} all "
            f"equal one of its own texts; the texts are too repetitive for draw_false_text"
        )

"""Datasets on the ALBEF / GRIT-VLP JSON annotation files (``vlkit.data.json_ann``, fact sheet §4.1).

``json_pretrain``, ``json_retrieval``, ``json_vqa`` and ``json_nlvr`` yield exactly the sample keys
of the Arrow dataset of the same task (captions, ``vqa``, ``nlvr2``), so every task and the
collator read them unchanged. They read the split's files from ``train_file`` / ``val_file`` /
``test_file`` (an empty one: no such split), images from files under ``image_root`` (VQA:
``vqa_root`` / ``vg_root``), and clean texts with ``pre_caption`` / ``pre_question`` to
``max_words`` words.

They reuse ``ArrowDataset``'s sample keys, seeded randomness, negatives and broken-image handling:
a missing or undecodable image file is logged once, counted in ``num_skipped_images`` and replaced
by a sample drawn with the seeded RNG (the reference crashed on it).
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from vlkit.data.datasets.base import (
    SPLITS,
    ArrowDataset,
    BrokenImageError,
    SplitUnavailableError,
)
from vlkit.data.json_ann import (
    AnnRow,
    Entry,
    JsonAnnotationError,
    as_file_list,
    load_answer_list,
    nlvr_rows,
    pre_caption,
    pre_question,
    pretrain_rows,
    read_entries,
    resolve_json_path,
    retrieval_eval_rows,
    retrieval_train_rows,
    vqa_rows,
)


class PackedStrings:
    """Strings in one UTF-8 buffer with offsets: no Python object per string, so forked
    data-loader workers share them (as the Arrow datasets' index arrays)."""

    def __init__(self, strings: Iterable[str]):
        encoded = [text.encode("utf-8") for text in strings]
        self.offsets = np.concatenate([[0], np.cumsum([len(data) for data in encoded])]).astype(np.int64)
        self.buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self.buffer[self.offsets[index]:self.offsets[index + 1]].tobytes().decode("utf-8")


class JsonRows:
    """A split's ``AnnRow`` records, packed: image paths, raw texts, task fields and origins."""

    def __init__(self, rows: Sequence[AnnRow], paths: Sequence[str], images_per_row: int):
        self.paths = list(paths)
        self.names = [os.path.splitext(os.path.basename(path))[0] for path in paths]
        self.num_rows = len(rows)
        self.images_per_row = images_per_row
        self.image_paths = PackedStrings(path for row in rows for path in row.images)
        self.texts = PackedStrings(text for row in rows for text in row.texts)
        self.text_starts = np.concatenate([[0], np.cumsum([len(row.texts) for row in rows])]).astype(np.int64)
        self.fields = PackedStrings(json.dumps(row.fields) for row in rows)
        self.origins = np.array([row.origin for row in rows], dtype=np.int64).reshape(-1, 2)

    def image(self, row: int, k: int) -> str:
        """Path of the ``k``-th image of ``row``."""
        return self.image_paths[row * self.images_per_row + k]

    def row_texts(self, row: int) -> list[str]:
        """The raw texts of ``row``, in file order."""
        return [self.texts[i] for i in range(self.text_starts[row], self.text_starts[row + 1])]

    def row_fields(self, row: int) -> dict[str, Any]:
        return json.loads(self.fields[row])

    def table_name(self, row: int) -> str:
        """Name of the file ``row`` comes from, without folder and extension (``nlvr_dev``)."""
        return self.names[self.origins[row, 0]]

    def where(self, row: int) -> str:
        """``file: entry N``: where ``row`` (its first entry) is written."""
        file, position = self.origins[row]
        return f"{self.paths[file]}: entry {position}"


class JsonDataset(ArrowDataset):
    """Base of the json datasets: ``ArrowDataset``'s sampling over ``JsonRows`` read from the
    split's json files instead of Arrow tables.

    Subclasses set ``name`` and ``image_columns`` and implement ``parse``; ``clean_text`` is
    ``pre_caption`` unless overridden. ``self.tables`` is a ``JsonRows`` (``open_tables``).
    """

    def __init__(self, split: str, *, split_files: dict[str, Any], image_root: str = "", max_words: int = 30,
                 **options: Any):
        self.split_files, self.image_root, self.max_words = split_files, image_root, max_words
        super().__init__(split, **options)

    def open_tables(self, split: str, data_root: str) -> JsonRows:
        """The rows of the split's json files (``split_files``)."""
        paths = self.json_paths(split, self.split_files, data_root)
        self.prepare(data_root)
        tables = JsonRows(self.parse(read_entries(paths), split), paths, len(self.image_columns))
        if tables.num_rows == 0:
            raise JsonAnnotationError(f"{self.label}: the files {paths} hold no entries; give files with data")
        return tables

    @classmethod
    def config_options(cls, cfg: Any) -> dict[str, Any]:
        return {
            "split_files": {split: cfg[f"{split}_file"] for split in SPLITS},
            "image_root": cfg.image_root,
            "max_words": cfg.max_words,
        }

    def json_paths(self, split: str, split_files: dict[str, Any], data_root: str) -> list[str]:
        """The split's json files, each found as given or under ``data_root``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for dataset {self.name!r}; valid: {list(SPLITS)}")
        key = f"{split}_file"
        files = as_file_list(split_files.get(split), key)
        if not files:
            raise SplitUnavailableError(
                f"dataset {self.name!r} has no {split!r} split: config key {key} is empty; set "
                f"{key}=[path.json] to use it"
            )
        return [resolve_json_path(path, data_root, key) for path in files]

    def prepare(self, data_root: str) -> None:
        """Load what ``parse`` needs besides the entries (nothing here); runs once the split is known to exist."""

    def parse(self, entries: Iterator[Entry], split: str) -> list[AnnRow]:
        """The rows of the split's entries."""
        raise NotImplementedError

    def texts_per_row(self) -> np.ndarray:
        return np.diff(self.tables.text_starts)

    def clean_text(self, text: str) -> str:
        return pre_caption(text, self.max_words)

    def row_texts(self, row: int) -> list[str]:
        """The cleaned texts of ``row``, in file order."""
        return [self.clean_text(text) for text in self.tables.row_texts(row)]

    def decode_image(self, column: str, row: int) -> Image.Image:
        """The RGB image in the file of ``column`` of ``row``."""
        path = self.tables.image(row, self.image_columns.index(column))
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except Exception as err:  # PIL raises many types on broken files; all mean "not decodable"
            raise BrokenImageError(
                f"{self.label}: cannot open {column!r} of {self.tables.where(row)} ({path}): {err}"
            ) from err
        return image


class JsonPretrainDataset(JsonDataset):
    """``json_pretrain``: ALBEF pre-training files, one sample per entry.

    A list caption yields one caption per access, drawn with the sample's seed (``cap_index`` says
    which). ``img_index`` is the entry's position in the split's concatenated files. Images are
    opened as given, or under ``image_root`` when it is set and the path is relative.
    """

    name = "json_pretrain"

    def parse(self, entries: Iterator[Entry], split: str) -> list[AnnRow]:
        return pretrain_rows(entries, self.image_root)

    def _build_index(self) -> None:
        super()._build_index()
        self.sample_rows = np.arange(self.tables.num_rows, dtype=np.int64)
        self.sample_slots = np.full(self.tables.num_rows, -1, dtype=np.int32)

    def sample_slot(self, index: int, row: int) -> int:
        """A caption drawn among the entry's captions (with the sample's seed); -1 with ``image_only``."""
        if self.image_only:
            return -1
        return self._draw(int(np.diff(self.row_text_starts[row:row + 2])[0]))


class JsonRetrievalDataset(JsonDataset):
    """``json_retrieval``: ALBEF retrieval files (``coco_train.json``, ``flickr30k_val.json``, ...).

    Train files hold one entry per caption; entries are grouped by ``image_id`` into image rows in
    first-seen order, so ``img_index`` is the dense image id. Val / test files hold one entry per
    image with its caption list. One sample per caption (per image with ``image_only``), as the
    Arrow caption datasets; ``img2txt`` / ``txt2img`` / ``retrieval_captions`` serve evaluation.
    """

    name = "json_retrieval"

    def parse(self, entries: Iterator[Entry], split: str) -> list[AnnRow]:
        if split == "train":
            return retrieval_train_rows(entries, self.image_root)
        return retrieval_eval_rows(entries, self.image_root)

    @property
    def text(self) -> list[str]:
        """Every cleaned caption of the split, image by image (ALBEF's ``text``)."""
        return [text for row in range(self.tables.num_rows) for text in self.row_texts(row)]

    @property
    def img2txt(self) -> dict[int, list[int]]:
        """Image row → positions of its captions in ``text``."""
        starts = self.row_text_starts.tolist()
        return {row: list(range(starts[row], starts[row + 1])) for row in range(self.tables.num_rows)}

    @property
    def txt2img(self) -> dict[int, int]:
        """Position in ``text`` → image row."""
        return dict(enumerate(self.text_rows.tolist()))

    def retrieval_captions(self) -> tuple[list[str], torch.Tensor]:
        """``(captions, image_rows)``: every caption and the image row (``img_index``) of each,
        what ``IRTRTask`` reads from a split to build its ``RetrievalTexts``."""
        return self.text, torch.as_tensor(self.text_rows)


class JsonVqaDataset(JsonDataset):
    """``json_vqa``: ALBEF VQA files (``vqa_train.json``, ``vg_qa.json``, ``vqa_test.json``).

    One sample per question. ``vqa_labels`` are positions in ``answer_list``; each distinct
    annotator answer scores count / number of answers (``vg`` answers 0.5); answers missing from
    the list are dropped from ``vqa_answer`` / ``vqa_labels`` / ``vqa_scores``, which are empty for
    questions without answers (test files; train entries must have one). ``qid`` is
    ``question_id``, else the entry's position in the split. ``vqa`` images are under
    ``vqa_root``, ``vg`` ones under ``vg_root``; questions are cleaned with ``pre_question``.
    """

    name = "json_vqa"

    def __init__(self, split: str, *, vqa_root: str, vg_root: str, answer_list: str, **options: Any):
        self.roots = {"vqa": vqa_root, "vg": vg_root}
        self.answer_list = answer_list
        super().__init__(split, **options)

    def prepare(self, data_root: str) -> None:
        """Read ``answer_list`` (answer → label)."""
        self.answer_ids = read_answer_list(self.answer_list, data_root, self.label)

    @classmethod
    def config_options(cls, cfg: Any) -> dict[str, Any]:
        return {
            **super().config_options(cfg),
            "vqa_root": cfg.vqa_root, "vg_root": cfg.vg_root, "answer_list": cfg.answer_list,
        }

    @property
    def answers(self) -> list[str]:
        """Label → answer string (the ``answer_list`` order)."""
        return list(self.answer_ids)

    def question_ids(self) -> list[int]:
        """``qid`` of every question, in sample order."""
        return [self.tables.row_fields(row)["qid"] for row in range(self.tables.num_rows)]

    def parse(self, entries: Iterator[Entry], split: str) -> list[AnnRow]:
        return vqa_rows(entries, self.roots, self.answer_ids, answers_required=split == "train")

    def clean_text(self, text: str) -> str:
        return pre_question(text, self.max_words)

    def task_fields(self, row: int, slot: int) -> dict[str, Any]:
        fields = self.tables.row_fields(row)
        return {
            "vqa_answer": fields["answers"], "vqa_labels": fields["labels"],
            "vqa_scores": fields["scores"], "qid": fields["qid"],
        }


def read_answer_list(path: str, data_root: str, user: str = "json_vqa") -> dict[str, int]:
    """The config key ``answer_list`` (found as given or under ``data_root``) as answer → label;
    ``user`` names who needs it in the error for an empty key."""
    if not path:
        raise ValueError(
            f"{user} needs config key answer_list (ALBEF's answer_list.json, a list of candidate "
            f"answers): set answer_list=path/answer_list.json"
        )
    return load_answer_list(resolve_json_path(path, data_root, "answer_list"))


class JsonNlvrDataset(JsonDataset):
    """``json_nlvr``: ALBEF NLVR2 files (``nlvr_train.json``, ``nlvr_dev.json``, ``nlvr_test.json``).

    Sample keys as ``nlvr2``: ``image_0`` / ``image_1`` (both under ``image_root``), ``answers``
    (1 for ``"True"``) and ``table_name`` (the json file's name without extension).
    """

    name = "json_nlvr"
    image_columns = ("image_0", "image_1")

    def parse(self, entries: Iterator[Entry], split: str) -> list[AnnRow]:
        return nlvr_rows(entries, self.image_root)

    def task_fields(self, row: int, slot: int) -> dict[str, Any]:
        return {"answers": self.tables.row_fields(row)["label"], "table_name": self.tables.table_name(row)}

"""Fixtures for the data layer: a tiny WordPiece tokenizer and tiny ViLT-layout Arrow tables.

``data_root`` holds a few rows for every dataset and split, with real JPEG bytes, plus these
faults: ``coco_caption_karpathy_train`` row 2 holds bytes that are not an image, and
``coco_caption_karpathy_restval`` row 1 an empty image cell; of the SBU shards only ``sbu_0`` and
``sbu_3`` exist.
"""
from __future__ import annotations

import io
import os
from typing import Callable

import numpy as np
import pyarrow as pa
import pytest
from omegaconf import OmegaConf
from PIL import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast

from vlkit.config.schema import defaults
from vlkit.data.tokenizer import load_tokenizer

WORDS = (
    "a an the man woman child dog cat horse bird two three red blue green small large old young "
    "riding holding playing sitting standing walking jumping eating looking on in at with near "
    "street field beach table couch grass water snow skateboarder frisbee umbrella giraffes "
    "motorcycle elephant surfboard kitchen bicycle"
).split()
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NOT_AN_IMAGE = b"\xff\xd8\xff\xe0 these bytes are not a jpeg"


def caption(seed: int, words: int = 8) -> str:
    """A deterministic pseudo caption of ``words`` words from ``WORDS``."""
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=words))


def jpeg(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    """JPEG bytes of a solid-colour image."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_arrow(root: str, name: str, columns: dict, rows_per_batch: int | None = None) -> str:
    """Write ``columns`` to ``{root}/{name}.arrow`` (Arrow IPC file format) and return the path."""
    table = pa.table(columns)
    path = os.path.join(root, f"{name}.arrow")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=rows_per_batch)
    return path


def _colour(key: int) -> tuple[int, int, int]:
    return (37 * key % 256, 91 * key % 256, 173 * key % 256)


def caption_columns(key: int, rows: int, captions_per_row: int = 3) -> dict:
    """``rows`` caption rows with distinct solid-colour JPEGs of varying size."""
    return {
        "image": [jpeg(40 + 8 * (r % 3), 30 + 6 * (r % 2), _colour(key * 100 + r)) for r in range(rows)],
        "caption": [[caption(key * 1000 + r * 10 + c) for c in range(captions_per_row)] for r in range(rows)],
        "image_id": [f"img_{key}_{r}.jpg" for r in range(rows)],
        "split": ["train"] * rows,
    }


def vqa_columns(key: int, rows: int, with_answers: bool = True) -> dict:
    questions = [[f"what is the {WORDS[(key + r + q) % len(WORDS)]} doing" for q in range(2)] for r in range(rows)]
    return {
        "image": [jpeg(36, 36, _colour(key * 100 + r)) for r in range(rows)],
        "questions": questions,
        "answers": [[["yes", "no"], ["two"]] if with_answers else [] for _ in range(rows)],
        "answer_labels": [[[0, 1], [2]] if with_answers else [] for _ in range(rows)],
        "answer_scores": [[[1.0, 0.3], [0.6]] if with_answers else [] for _ in range(rows)],
        "image_id": [key * 100 + r for r in range(rows)],
        "question_id": [[(key * 100 + r) * 10 + q for q in range(2)] for r in range(rows)],
        "split": ["train"] * rows,
    }


def nlvr2_columns(key: int, rows: int) -> dict:
    return {
        "image_0": [jpeg(40, 32, _colour(key * 100 + r)) for r in range(rows)],
        "image_1": [jpeg(32, 40, _colour(key * 100 + r + 50)) for r in range(rows)],
        "questions": [[caption(key * 100 + r), caption(key * 100 + r + 7)] for r in range(rows)],
        "answers": [["True", "False"] for _ in range(rows)],
        "identifier": [f"nlvr2-{key}-{r}" for r in range(rows)],
    }


def snli_columns(key: int, rows: int) -> dict:
    return {
        "image": [jpeg(36, 40, _colour(key * 100 + r)) for r in range(rows)],
        "sentences": [[[caption(r), f"  {caption(key * 100 + r + h)}  "] for h in range(3)] for r in range(rows)],
        "labels": [[0, 1, 2] for _ in range(rows)],
        "image_id": [f"{key * 100 + r}.jpg" for r in range(rows)],
    }


def _write_all_datasets(root: str) -> None:
    coco_train = caption_columns(1, 6)
    coco_train["caption"][0] = ["a dog on grass", "a cat", "a dog on grass", "two birds", "a cat"]
    coco_train["image"][2] = NOT_AN_IMAGE
    write_arrow(root, "coco_caption_karpathy_train", coco_train, rows_per_batch=4)
    restval = caption_columns(2, 3)
    restval["image"][1] = b""
    write_arrow(root, "coco_caption_karpathy_restval", restval)
    write_arrow(root, "coco_caption_karpathy_val", caption_columns(3, 3))
    write_arrow(root, "coco_caption_karpathy_test", caption_columns(4, 3))
    write_arrow(root, "f30k_caption_karpathy_train", caption_columns(5, 2))
    write_arrow(root, "f30k_caption_karpathy_val", caption_columns(6, 2))
    write_arrow(root, "f30k_caption_karpathy_test", caption_columns(7, 2))
    write_arrow(root, "vg", caption_columns(8, 3))
    write_arrow(root, "sbu_0", caption_columns(9, 2, captions_per_row=1))
    write_arrow(root, "sbu_3", caption_columns(10, 2, captions_per_row=1))
    write_arrow(root, "conceptual_caption_train_0", caption_columns(11, 2, captions_per_row=1))
    write_arrow(root, "conceptual_caption_val_0", caption_columns(12, 2, captions_per_row=1))
    write_arrow(root, "vqav2_train", vqa_columns(13, 3))
    write_arrow(root, "vqav2_trainable_val", vqa_columns(14, 2))
    write_arrow(root, "vqav2_rest_val", vqa_columns(15, 2))
    write_arrow(root, "vqav2_test", vqa_columns(16, 2, with_answers=False))
    write_arrow(root, "vgqa_train", vqa_columns(17, 2))
    write_arrow(root, "nlvr2_train", nlvr2_columns(18, 3))
    write_arrow(root, "nlvr2_dev", nlvr2_columns(19, 2))
    write_arrow(root, "nlvr2_test1", nlvr2_columns(20, 2))
    write_arrow(root, "snli_train", snli_columns(21, 3))
    write_arrow(root, "snli_dev", snli_columns(22, 2))
    write_arrow(root, "snli_test", snli_columns(23, 2))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("arrow"))
    _write_all_datasets(root)
    return root


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """A WordPiece tokenizer (small vocabulary, so long words split into pieces) saved for AutoTokenizer."""
    corpus = [caption(seed, words=10) for seed in range(400)]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=180, special_tokens=SPECIAL_TOKENS))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(token, backend.token_to_id(token)) for token in ("[CLS]", "[SEP]")],
    )
    backend.decoder = decoders.WordPiece()
    path = str(tmp_path_factory.mktemp("tokenizer"))
    BertTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


@pytest.fixture
def make_cfg(data_root, tokenizer_dir) -> Callable:
    """``make_cfg(**overrides)``: a run config on the tiny tables (S=32, L=16, no negatives)."""

    def make(**overrides):
        values = defaults()
        values.update(
            data_root=data_root, tokenizer=tokenizer_dir, image_size=32, max_text_len=16,
            draw_false_image=0, draw_false_text=0, train_transform_keys=["mae"], val_transform_keys=["mae_test"],
        )
        values.update(overrides)
        return OmegaConf.create(values)

    return make


@pytest.fixture
def write_table() -> Callable:
    """``write_table(root, name, columns, rows_per_batch=None)`` writes one Arrow IPC file."""
    return write_arrow


@pytest.fixture
def jpeg_bytes() -> Callable:
    """``jpeg_bytes(width, height, color)``: JPEG bytes of a solid-colour image."""
    return jpeg


@pytest.fixture
def caption_table() -> Callable:
    """``caption_table(key, rows, captions_per_row=3)``: columns of a caption table."""
    return caption_columns

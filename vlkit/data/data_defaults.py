"""Config values that follow the data unless the command line sets them (issue 19): the tokenizer
saved in ``data_root/tokenizer``, ``vocab_size`` (the tokenizer's size) and ``vqav2_label_size``
(the VQA answer vocabulary's size)."""
from __future__ import annotations

import logging
import os
from typing import Any, Collection

import pyarrow.compute as pc

from vlkit.data.arrow import arrow_path, open_arrow

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "bert-base-uncased"
DATA_TOKENIZER = "tokenizer"


def data_tokenizer(config: dict[str, Any]) -> str | None:
    """``data_root/tokenizer`` when it holds a saved tokenizer."""
    root = config.get("data_root") or ""
    folder = os.path.join(root, DATA_TOKENIZER)
    return folder if root and os.path.isfile(os.path.join(folder, "tokenizer_config.json")) else None


def arrow_answer_count(data_root: str) -> int | None:
    """1 + the largest answer label of the VQA train and val tables (None without them)."""
    from vlkit.data.datasets.vqa import VQAv2Dataset

    largest = None
    for name in VQAv2Dataset.split_tables["train"] + VQAv2Dataset.split_tables["val"]:
        path = arrow_path(data_root, name)
        if not os.path.isfile(path):
            continue
        table = open_arrow(path)
        if "answer_labels" not in table.column_names:
            continue
        labels = pc.list_flatten(pc.list_flatten(table.column("answer_labels")))
        if len(labels):
            top = pc.max(labels).as_py()
            largest = top if largest is None else max(largest, top)
    return None if largest is None else largest + 1


def answer_count(config: dict[str, Any]) -> int | None:
    """The size of the answer vocabulary the config's VQA data implies, when it can be read."""
    from vlkit.data.datasets.json_datasets import read_answer_list

    datasets = list(config.get("datasets") or [])
    if "vqa" in datasets and config.get("data_root"):
        return arrow_answer_count(config["data_root"])
    if "json_vqa" in datasets and config.get("answer_list"):
        try:
            return len(read_answer_list(config["answer_list"], config.get("data_root", "")))
        except (OSError, ValueError):
            return None  # the task reports an unreadable answer_list
    return None


def apply_data_defaults(config: dict[str, Any], given: Collection[str]) -> None:
    """Fill ``tokenizer``, ``vocab_size`` and ``vqav2_label_size`` from the data, in place, for the
    keys not in ``given`` (those set on the command line). A given value that disagrees with the
    data is reported where the data is read (the task's tokenizer, the VQA answer vocabulary)."""
    found = data_tokenizer(config)
    if "tokenizer" not in given and found and config.get("tokenizer") == DEFAULT_TOKENIZER:
        config["tokenizer"] = found
        log.info("tokenizer: using %s (data_root's own)", found)
    if "vocab_size" not in given and os.path.isdir(str(config.get("tokenizer", ""))):
        from vlkit.data.tokenizer import load_tokenizer

        config["vocab_size"] = len(load_tokenizer(config["tokenizer"]))
    running = config.get("loss_names", {})
    if "vqav2_label_size" not in given and max(running.get("vqa", 0), running.get("vqa_decoder", 0)) > 0:
        count = answer_count(config)
        if count is not None:
            config["vqav2_label_size"] = count

"""A WordPiece tokenizer trained on the texts of a data root's Arrow tables and json files
(``vlkit data tokenizer``): the synthetic set's recipe (``vlkit.data.synthetic.build_tokenizer``)
on one's own data, capped at a vocabulary size."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pyarrow.compute as pc

from vlkit.data.arrow import open_arrow
from vlkit.data.synthetic import TEXT_COLUMNS, build_tokenizer, save_tokenizer

JSON_TEXT_KEYS = ("caption", "captions", "question", "questions", "answer", "answers", "sentence",
                  "sentences", "sent", "sentf", "text", "hypothesis", "statement")
"""Keys whose strings are texts in ALBEF / GRIT json annotations and LXMERT json files."""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def json_texts(value: Any) -> Iterator[str]:
    """The strings under ``JSON_TEXT_KEYS`` anywhere in a json document; a top-level list of
    strings (an answer list) counts whole."""
    if isinstance(value, list):
        if value and all(isinstance(item, str) for item in value):
            yield from value
            return
        for item in value:
            yield from json_texts(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from (_strings(item) if key in JSON_TEXT_KEYS else json_texts(item))


def arrow_texts(path: Path) -> list[str]:
    table = open_arrow(str(path))
    texts: list[str] = []
    for column in TEXT_COLUMNS:
        if column in table.column_names:
            flat = table.column(column)
            while hasattr(flat.type, "value_type"):
                flat = pc.list_flatten(flat)
            texts += [text for text in flat.to_pylist() if isinstance(text, str)]
    return texts


def data_texts(data_root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Every text of the ``*.arrow`` and ``*.json`` files under ``data_root`` (the tokenizer
    folder excluded), and the files read."""
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist")
    texts, files = [], []
    for path in sorted(root.rglob("*")):
        if "tokenizer" in path.relative_to(root).parts[:-1] or path.suffix not in (".arrow", ".json"):
            continue
        if path.suffix == ".arrow":
            found = arrow_texts(path)
        else:
            try:
                found = list(json_texts(json.loads(path.read_text())))
            except (ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"{path} is not a json file ({err}); remove it or fix it") from err
        if found:
            texts += found
            files.append(str(path))
    if not texts:
        raise ValueError(f"no texts in {root}: expected Arrow tables with {list(TEXT_COLUMNS)} columns "
                         f"or json annotations with {list(JSON_TEXT_KEYS)} keys")
    return texts, files


def train_data_tokenizer(data_root: str | os.PathLike, out: str | os.PathLike | None = None,
                         vocab_size: int = 30522) -> dict[str, Any]:
    """Train the tokenizer on ``data_root``'s texts and save it (default ``data_root/tokenizer``,
    which runs on that data root then use by default). Returns its folder, size and sources."""
    texts, files = data_texts(data_root)
    tokenizer = build_tokenizer(texts, max_size=vocab_size)
    out = str(out or Path(data_root) / "tokenizer")
    save_tokenizer(tokenizer, out)
    return {"tokenizer": out, "vocab_size": len(tokenizer), "texts": len(texts), "files": files}

"""Raw inputs under ``--root``: where each file is expected, and reading json / json-lines with
errors that name the file, the key to override and the offending line."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator, Mapping


class RawInputError(ValueError):
    """A raw input file is missing or malformed."""


class RawInputs:
    """Named raw inputs of one dataset: ``defaults`` (key → path relative to ``root``), of which
    ``overrides`` (key → path, absolute or relative to the current directory) replace some."""

    def __init__(self, dataset: str, root: str, defaults: Mapping[str, str], overrides: Mapping[str, str] | None = None):
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise RawInputError(
                f"{dataset}: unknown input key(s) {unknown} in --path; valid keys: {sorted(defaults)}"
            )
        self.dataset = dataset
        self.root = os.path.abspath(root)
        self.overrides = overrides
        self.paths = {key: os.path.abspath(overrides.get(key, os.path.join(self.root, rel))) for key, rel in defaults.items()}

    def path(self, key: str) -> str:
        return self.paths[key]

    def _missing(self, key: str, what: str) -> RawInputError:
        where = "given by --path" if key in self.overrides else f"expected under --root {self.root}"
        return RawInputError(
            f"{self.dataset}: {what} {self.paths[key]} not found ({where}); put it there or point at it "
            f"with --path {key}=PATH"
        )

    def file(self, key: str) -> str:
        """The file ``key``; a ``RawInputError`` naming it and where it was expected when absent."""
        if not os.path.isfile(self.paths[key]):
            raise self._missing(key, "raw file")
        return self.paths[key]

    def folder(self, key: str) -> str:
        """The folder ``key``; a ``RawInputError`` naming it when absent."""
        if not os.path.isdir(self.paths[key]):
            raise self._missing(key, "image folder")
        return self.paths[key]

    def exists(self, key: str) -> bool:
        return os.path.exists(self.paths[key])


def load_json(path: str) -> Any:
    """A whole json file; a ``RawInputError`` naming the file, line and column when malformed."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise RawInputError(f"{path}: malformed json at line {err.lineno} column {err.colno}: {err.msg}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise RawInputError(f"{path}: cannot read ({err})") from err


def read_jsonl(path: str) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of every non-blank line of a json-lines file; a malformed line
    raises a ``RawInputError`` naming the file and the line."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise RawInputError(f"{path}: line {number} is not valid json ({err.msg}): {line.strip()[:80]!r}") from err
            if not isinstance(value, dict):
                raise RawInputError(f"{path}: line {number} holds a json {type(value).__name__}; expected an object")
            yield number, value


def field(record: Mapping, name: str, where: str) -> Any:
    """``record[name]``; a ``RawInputError`` naming ``where`` and the fields present when absent."""
    if not isinstance(record, Mapping):
        raise RawInputError(f"{where}: expected a json object, got {type(record).__name__}")
    if name not in record:
        raise RawInputError(f"{where}: no field {name!r} (it has {sorted(record)[:10]})")
    return record[name]


def list_field(record: Mapping, name: str, where: str) -> list:
    """``record[name]``, which must be a json list."""
    value = field(record, name, where)
    if not isinstance(value, list):
        raise RawInputError(f"{where}: field {name!r} must be a list, got {type(value).__name__}")
    return value


def index_images(folders: list[str], depth: int = 1, key=os.path.basename) -> dict[str, str]:
    """``key(path)`` → path of every file ``depth`` levels below each folder (``depth=1``: the
    folder's own files; 2: the files of its sub-folders); the first folder wins a clash."""
    found: dict[str, str] = {}

    def walk(folder: str, level: int) -> None:
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if level < depth and entry.is_dir():
                    walk(entry.path, level + 1)
                elif level == depth and entry.is_file():
                    found.setdefault(key(entry.path), entry.path)

    for folder in folders:
        if os.path.isdir(folder):
            walk(folder, 1)
    return found

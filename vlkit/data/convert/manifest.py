"""``manifest.json`` beside the tables: per converted dataset, its source files (size, sha256),
options, tables with their counts, json files, skipped items with reasons and the vlkit version.

Several datasets may be converted into one folder (as ViLT's arrow folder holds them all), so the
manifest holds one section per dataset under ``"datasets"`` and each conversion replaces its own.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any

import vlkit
from vlkit.eval.metrics import file_sha256

MANIFEST = "manifest.json"


def describe_sources(paths: dict[str, str]) -> dict[str, dict]:
    """key → ``{path, size, sha256}`` of each existing source file, ``{path, files}`` of each
    folder (its file count, sub-folders included), ``{path, present: False}`` otherwise."""
    sources: dict[str, dict] = {}
    for key, path in sorted(paths.items()):
        if os.path.isfile(path):
            sources[key] = {"path": path, "size": os.path.getsize(path), "sha256": file_sha256(path)}
        elif os.path.isdir(path):
            sources[key] = {"path": path, "files": sum(len(files) for _, _, files in os.walk(path))}
        else:
            sources[key] = {"path": path, "present": False}
    return sources


def read_manifest(out_dir: str) -> dict[str, Any]:
    """The manifest of ``out_dir`` (an empty one when there is none)."""
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        return {"datasets": {}}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json_atomically(path: str, value: Any) -> None:
    """``value`` as indented json, written to a temporary name and renamed into place."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(temporary, path)


def record_dataset(out_dir: str, dataset: str, section: dict[str, Any]) -> dict[str, Any]:
    """Put ``section`` (plus the vlkit version and time) under ``dataset`` in the manifest."""
    manifest = read_manifest(out_dir)
    manifest["vlkit_version"] = vlkit.__version__
    manifest.setdefault("datasets", {})[dataset] = {
        "vlkit_version": vlkit.__version__,
        "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **section,
    }
    write_json_atomically(os.path.join(out_dir, MANIFEST), manifest)
    return manifest["datasets"][dataset]


def forget_dataset(out_dir: str, dataset: str) -> None:
    """Drop ``dataset``'s section (a conversion that starts over makes the old counts stale)."""
    manifest = read_manifest(out_dir)
    if manifest.get("datasets", {}).pop(dataset, None) is not None:
        write_json_atomically(os.path.join(out_dir, MANIFEST), manifest)

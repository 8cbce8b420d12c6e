"""Converters from the official raw dataset layouts to vlkit's Arrow tables (the ViLT layout), with
the ALBEF / GRIT-VLP and LXMERT json formats as optional extra outputs.

``convert(name, root, out_dir, **options)`` converts one dataset (``converters()`` lists them) and
returns its manifest section; ``vlkit data convert NAME --root RAW --out DIR`` is the command
line. See ``docs/data.md`` for the raw layout each converter expects under ``root``.

Modules: one per raw dataset, and the shared ``inputs`` (raw files and their errors), ``images``
(reading and checking images), ``writer`` (streamed atomic Arrow files), ``emit`` /
``albef_json`` / ``lxmert_json`` (json formats), ``manifest`` and ``pipeline`` (the run itself).
"""
from __future__ import annotations

import importlib
from typing import Any

MODULES = ("coco_karpathy", "f30k", "vg", "sbu", "cc3m", "vqav2", "vgqa", "nlvr2", "snli_ve", "imagenet")
"""One module per raw dataset, each defining ``CONVERTER``."""


def converters() -> dict:
    """Dataset name → its ``Converter`` (imported on first use, so that ``vlkit data check`` and
    the shared modules load without the converters' dependencies)."""
    found = [importlib.import_module(f"vlkit.data.convert.{module}").CONVERTER for module in MODULES]
    return {converter.name: converter for converter in found}


def convert(name: str, root: str, out_dir: str, **options: Any) -> dict[str, Any]:
    """Convert dataset ``name`` from its raw files under ``root`` into ``out_dir``.

    ``options`` are ``Options`` fields (``formats``, ``paths``, ``shard_size``, ``verify_images``,
    ``resume``, ``progress``, ``seed``, ``min_answer_count``, ``rest_val_images``,
    ``normalize_raw_answers``). Returns the dataset's section of ``out_dir/manifest.json``.
    """
    from vlkit.data.convert.pipeline import Options, run_conversion

    available = converters()
    if name not in available:
        raise KeyError(f"unknown dataset {name!r}; converters: {sorted(available)}")
    unknown = sorted(set(options) - set(Options.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; valid: {sorted(Options.__dataclass_fields__)}")
    if "formats" in options:
        options["formats"] = tuple(options["formats"])
    return run_conversion(available[name], root, out_dir, Options(**options))

"""Dataset registry: ``DATASETS[name]`` and ``build_dataset(name, split, cfg, tokenizer)``."""
from __future__ import annotations

import os
from typing import Any, Sequence

from transformers import PreTrainedTokenizerBase

from vlkit.data.arrow import MissingArrowFilesError, arrow_path
from vlkit.data.datasets.base import ArrowDataset, SplitUnavailableError
from vlkit.data.datasets.concat import ConcatSamples
from vlkit.data.datasets.captions import (
    CocoCaptionDataset,
    ConceptualCaptionDataset,
    F30kCaptionDataset,
    SbuCaptionDataset,
    VisualGenomeCaptionDataset,
)
from vlkit.data.datasets.json_datasets import (
    JsonNlvrDataset,
    JsonPretrainDataset,
    JsonRetrievalDataset,
    JsonVqaDataset,
)
from vlkit.data.datasets.nlvr2 import Nlvr2Dataset
from vlkit.data.datasets.snli import SnliVeDataset
from vlkit.data.datasets.vqa import VQAv2Dataset

DATASETS: dict[str, type[ArrowDataset]] = {
    cls.name: cls
    for cls in (
        CocoCaptionDataset,
        F30kCaptionDataset,
        VisualGenomeCaptionDataset,
        SbuCaptionDataset,
        ConceptualCaptionDataset,
        VQAv2Dataset,
        Nlvr2Dataset,
        SnliVeDataset,
        JsonPretrainDataset,
        JsonRetrievalDataset,
        JsonVqaDataset,
        JsonNlvrDataset,
    )
}


def build_dataset(
    name: str,
    split: str,
    cfg: Any,
    tokenizer: PreTrainedTokenizerBase,
    transform_keys: Sequence[str] | None = None,
) -> ArrowDataset | None:
    """Dataset ``name`` for ``split`` built from ``cfg``; None when that dataset has no such split
    (e.g. ``vg`` or ``sbu`` val). ``transform_keys`` defaults to the split's keys in ``cfg``."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}")
    try:
        return DATASETS[name].from_config(split, cfg, tokenizer, transform_keys)
    except SplitUnavailableError:
        return None


def build_datasets(
    names: Sequence[str], split: str, cfg: Any, tokenizer: PreTrainedTokenizerBase
) -> ConcatSamples | None:
    """The datasets ``names`` that have ``split``, concatenated in that order (None if none has it)."""
    if not names:
        raise ValueError("config key datasets is empty; name at least one, e.g. datasets=['coco']")
    built, lacking = [], {}
    for name in names:
        try:
            built.append(build_dataset(name, split, cfg, tokenizer))
        except MissingArrowFilesError as err:
            lacking[name] = err
    if lacking:
        raise missing_datasets_error(names, lacking, cfg.data_root)
    present = [dataset for dataset in built if dataset is not None]
    return ConcatSamples(present) if present else None


def missing_datasets_error(names: Sequence[str], lacking: dict[str, Exception], data_root: str) -> MissingArrowFilesError:
    """The files each lacking dataset expected, and ``datasets=[...]`` of those whose files are there
    (issue 19: a coco-only root used to fail on ``vg.arrow`` alone)."""
    have = [name for name in names if name not in lacking and any(
        os.path.isfile(arrow_path(data_root, table)) for tables in DATASETS[name].split_tables.values() for table in tables)]
    details = "; ".join(f"{name}: {err}" for name, err in lacking.items())
    hint = (f"train on the datasets that are there with datasets=[{','.join(have)}]" if have else
            "set data_root to the folder holding the Arrow files (or `vlkit data synth --out DIR` for a first try)")
    return MissingArrowFilesError(f"data_root={data_root!r} lacks the Arrow files of datasets {list(lacking)} "
                                  f"(of datasets={list(names)}): {hint}. {details}")

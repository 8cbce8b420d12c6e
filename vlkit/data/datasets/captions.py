"""Image-caption datasets (fact sheet §4.2, §4.4): column ``caption`` (list of strings per image).

Repeated captions of one image are dropped, keeping the first occurrence in file order (the
reference deduplicated through a ``set``, whose order changed with the hash seed).
"""
from __future__ import annotations

from vlkit.data.datasets.base import ArrowDataset


class CaptionDataset(ArrowDataset):
    """Shared settings of the caption datasets; one sample per distinct caption."""

    text_column = "caption"
    dedupe_texts = True


class CocoCaptionDataset(CaptionDataset):
    """MS-COCO, Karpathy splits.

    Deliberate fix: val is ``coco_caption_karpathy_val`` (the reference validated on the Karpathy
    test split, so checkpoints were selected on test data).
    """

    name = "coco"
    split_tables = {
        "train": ["coco_caption_karpathy_train", "coco_caption_karpathy_restval"],
        "val": ["coco_caption_karpathy_val"],
        "test": ["coco_caption_karpathy_test"],
    }


class F30kCaptionDataset(CaptionDataset):
    """Flickr30k, Karpathy splits.

    Deliberate fix: train is ``f30k_caption_karpathy_train`` only and val is ``_val`` (the reference
    trained on train + val and validated on test).
    """

    name = "f30k"
    split_tables = {
        "train": ["f30k_caption_karpathy_train"],
        "val": ["f30k_caption_karpathy_val"],
        "test": ["f30k_caption_karpathy_test"],
    }


class VisualGenomeCaptionDataset(CaptionDataset):
    """Visual Genome region descriptions as captions; training data only."""

    name = "vg"
    split_tables = {"train": ["vg"]}


class SbuCaptionDataset(CaptionDataset):
    """SBU Captions in 9 shards (``sbu_0`` .. ``sbu_8``); training data only."""

    name = "sbu"
    split_tables = {"train": [f"sbu_{k}" for k in range(9)]}


class ConceptualCaptionDataset(CaptionDataset):
    """Conceptual Captions (GCC) in 31 training shards, as VLC; test is the validation shard."""

    name = "gcc"
    split_tables = {
        "train": [f"conceptual_caption_train_{k}" for k in range(31)],
        "val": ["conceptual_caption_val_0"],
        "test": ["conceptual_caption_val_0"],
    }

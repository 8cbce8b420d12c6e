"""ImageFolder data for the classifier: timm's transforms, corrupt images skipped and counted,
distributed samplers and loaders (fact sheet §8.5, §8.6).

Samplers are vlkit's ``ResumableDistributedSampler``: training shuffles with ``seed + epoch`` and
pads each epoch to a multiple of the world size, as ``DistributedSampler``; evaluation pads
nothing, so across the processes every image is evaluated exactly once. Samples are keyed
``(index, sample_seed)`` and augmented under that seed, so the batches do not depend on the number
of loader workers and a resumed run sees the same ones.

A file that cannot be decoded is logged once per process and counted: in training the next
readable image of the folder stands in for it (batches keep their size, which mixup needs); in
evaluation it is left out, so metrics cover the readable images only. Every batch carries how many
images were skipped while building it.
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from PIL import Image, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from vlkit.data.samplers import ResumableDistributedSampler
from vlkit.utils.seeding import seeded, split_key

log = logging.getLogger(__name__)

SMALL_INPUT_CROP_PCT = 224 / 256
"""Evaluation crop fraction up to 224 px (resize to input / 0.875, centre crop); above, 1.0."""
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
"""What PIL raises for a truncated, corrupt or not-an-image file."""


def posterize(image: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op, also for 0 bits: an all-black image, as Pillow before 13 gave.

    timm's RandAugment asks for 0 bits at the top magnitude (``rand-m9-mstd0.5``: a few percent of
    its posterize draws), which Pillow 13 refuses with a ValueError that ends the run."""
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return image if bits_to_keep >= 8 else ImageOps.posterize(image, bits_to_keep)


def _augment_ops(transform: Any) -> list[Any]:
    """The auto-augment ops (timm ``AugmentOp``) inside a composed transform."""
    ops = []
    for step in getattr(transform, "transforms", []):
        ops += list(getattr(step, "ops", []))  # RandAugment
        ops += [op for sub_policy in getattr(step, "policy", []) for op in sub_policy]  # AutoAugment
    return ops


def build_transform(is_train: bool, args: argparse.Namespace) -> Callable:
    """timm's ImageNet transform: training = RandomResizedCrop, flip, ``--aa``, ``--color_jitter``,
    random erasing; evaluation = short side to ``input_size / crop_pct``, centre crop. Both bicubic
    with ImageNet mean and std."""
    if is_train:
        transform = create_transform(
            input_size=args.input_size, is_training=True, color_jitter=args.color_jitter,
            auto_augment=args.aa, interpolation="bicubic", re_prob=args.reprob, re_mode=args.remode,
            re_count=args.recount, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        )
        for op in _augment_ops(transform):
            if op.name.startswith("Posterize"):
                op.aug_fn = posterize
        return transform
    crop_pct = SMALL_INPUT_CROP_PCT if args.input_size <= 224 else 1.0
    return create_transform(
        input_size=args.input_size, is_training=False, interpolation="bicubic", crop_pct=crop_pct,
        crop_mode="center", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
    )


class SafeImageFolder(ImageFolder):
    """``ImageFolder`` that takes ``(index, seed)`` keys and survives unreadable files.

    ``__getitem__`` returns ``(image, target, skipped)``: with ``replace_unreadable`` the first
    readable image after a bad one stands in (``skipped`` = files passed over); without, a bad
    file gives ``(None, -1, 1)``, which ``collate_skipping`` drops. ``class_to_idx`` (e.g. the
    training set's) fixes the labels, so a split missing a class keeps the others' indices.
    """

    def __init__(self, root: str, transform: Callable, replace_unreadable: bool,
                 class_to_idx: dict[str, int] | None = None):
        self._given_classes = class_to_idx
        super().__init__(root, transform=transform, allow_empty=class_to_idx is not None)
        self.replace_unreadable = replace_unreadable
        self._reported: set[str] = set()

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        found, mapping = super().find_classes(directory)
        if self._given_classes is None:
            return found, mapping
        unknown = sorted(set(found) - set(self._given_classes))
        if unknown:
            raise ValueError(f"{directory} has class folders {unknown[:5]} that the training set "
                             "lacks; give train/ and val/ the same class folders")
        return sorted(self._given_classes, key=self._given_classes.get), dict(self._given_classes)

    def _read(self, index: int) -> Image.Image | None:
        path = self.samples[index][0]
        try:
            with open(path, "rb") as handle:
                image = Image.open(handle)
                return image.convert("RGB")
        except UNREADABLE as error:
            if path not in self._reported:
                self._reported.add(path)
                log.warning("skipping unreadable image %s (%s: %s)", path, type(error).__name__, error)
            return None

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int, int]:
        index, seed = split_key(key)
        attempts = len(self.samples) if self.replace_unreadable else 1
        for skipped in range(attempts):
            position = (index + skipped) % len(self.samples)
            image = self._read(position)
            if image is not None:
                with seeded(seed):
                    return self.transform(image), self.targets[position], skipped
        if self.replace_unreadable:
            raise RuntimeError(f"no image under {self.root} can be read; check the dataset")
        return None, -1, 1


def collate_skipping(samples: Sequence[tuple[Any, int, int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(images, targets, num_skipped)``, leaving out the samples whose image is None."""
    kept = [(image, target) for image, target, _ in samples if image is not None]
    skipped = sum(count for _, _, count in samples)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images, targets = zip(*kept)
    return torch.stack(images), torch.tensor(targets, dtype=torch.long), skipped


def _split_dir(args: argparse.Namespace, split: str) -> str:
    path = os.path.join(args.data_path, split)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"--data_path {args.data_path!r} has no {split}/ folder; it must hold train/ and val/ with "
            f"one sub-folder of images ({', '.join(IMG_EXTENSIONS[:4])}, ...) per class"
        )
    return path


def resolve_nb_classes(args: argparse.Namespace) -> int:
    """``args.nb_classes``, set from the class folders of ``train/`` (``val/`` without one) when not
    given; a given value smaller than the folder's class count is refused."""
    folder = os.path.join(args.data_path, "train")
    if not os.path.isdir(folder):
        folder = _split_dir(args, "val")
    found = len(find_classes(folder)[0])
    if args.nb_classes is None:
        args.nb_classes = found
    elif args.nb_classes < found:
        raise ValueError(f"--nb_classes {args.nb_classes} is smaller than the {found} class folders of {folder}; "
                         f"set --nb_classes {found} (or leave it out to use the folder's count)")
    return args.nb_classes


def build_datasets(args: argparse.Namespace, with_train: bool = True) -> tuple[SafeImageFolder | None, SafeImageFolder]:
    """``(train or None, val)`` from ``args.data_path``; val uses train's class indices (read from
    the folder names of ``train/`` when it exists, also for evaluation only)."""
    train = None
    train_dir = os.path.join(args.data_path, "train")
    classes = find_classes(train_dir)[1] if os.path.isdir(train_dir) else None
    if with_train:
        train = SafeImageFolder(_split_dir(args, "train"), build_transform(True, args), replace_unreadable=True)
    val = SafeImageFolder(_split_dir(args, "val"), build_transform(False, args), replace_unreadable=False,
                          class_to_idx=classes)
    if len(val.classes) > args.nb_classes:
        raise ValueError(f"{args.data_path} has {len(val.classes)} classes but --nb_classes is "
                         f"{args.nb_classes}; set --nb_classes {len(val.classes)}")
    return train, val


@dataclass
class Loaders:
    train: DataLoader | None
    val: DataLoader
    train_sampler: ResumableDistributedSampler | None


def _loader(dataset, sampler, args, pin_memory: bool, drop_last: bool) -> DataLoader:
    return DataLoader(
        dataset, sampler=sampler, batch_size=args.batch_size, num_workers=args.num_workers,
        pin_memory=pin_memory, drop_last=drop_last, collate_fn=collate_skipping,
        persistent_workers=False,
    )


def build_loaders(args: argparse.Namespace, rank: int, world_size: int, pin_memory: bool,
                  with_train: bool = True) -> Loaders:
    """Training loader (shuffled per epoch, padded, last partial batch dropped) and evaluation
    loader (each image once over the processes with ``--dist_eval``, else all on every process)."""
    train, val = build_datasets(args, with_train)
    sampler = None
    train_loader = None
    if train is not None:
        sampler = ResumableDistributedSampler(train, num_replicas=world_size, rank=rank, seed=args.seed)
        if len(sampler) < args.batch_size:
            raise ValueError(
                f"{len(train)} training images give each of the {world_size} processes {len(sampler)}, "
                f"fewer than --batch_size {args.batch_size}; lower --batch_size"
            )
        train_loader = _loader(train, sampler, args, pin_memory, drop_last=True)
    shards = (world_size, rank) if args.dist_eval else (1, 0)
    val_sampler = ResumableDistributedSampler(val, num_replicas=shards[0], rank=shards[1],
                                              seed=args.seed, training=False)
    return Loaders(train_loader, _loader(val, val_sampler, args, pin_memory, drop_last=False), sampler)

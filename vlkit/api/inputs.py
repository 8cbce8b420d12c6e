"""What the task methods accept, turned into model inputs: images (PIL images, file paths or
(3, H, W) tensors already preprocessed) and texts (strings, tokenised to ``max_text_len``)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from vlkit.api.folder import eval_transform_key
from vlkit.data.canvas import ResizePadNormalize
from vlkit.data.json_ann import pre_caption, pre_question
from vlkit.data.transforms import build_transform

log = logging.getLogger("vlkit.api")

ImageInput = Any
"""A PIL image, a path to an image file, or a preprocessed (3, H, W) float tensor."""


def as_list(values: Any, what: str) -> list:
    """``values`` as a non-empty list (a single item becomes a list of one)."""
    if isinstance(values, (str, os.PathLike, Image.Image)) or torch.is_tensor(values) and values.dim() == 3:
        values = [values]
    if isinstance(values, torch.Tensor):
        values = list(values)
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{what}: expected a list, got {type(values).__name__}")
    if not values:
        raise ValueError(f"{what}: the list is empty; give at least one")
    return list(values)


def open_image(item: ImageInput, position: int) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, os.PathLike)):
        if not os.path.isfile(item):
            raise FileNotFoundError(f"image {position}: no such file {str(item)!r}")
        try:
            with Image.open(item) as image:
                return image.convert("RGB")
        except OSError as err:
            raise ValueError(f"image {position}: {str(item)!r} is not a readable image ({err})") from err
    raise TypeError(f"image {position}: expected a PIL image, a file path or a (3, H, W) tensor, "
                    f"got {type(item).__name__}")


@dataclass
class ImageBatch:
    """Stacked images (B, 3, H, W) and, for CLIP-ViL's padded canvases, ``pixel_mask`` (B, H, W)."""

    pixels: torch.Tensor
    pixel_mask: torch.Tensor | None = None

    def to(self, device: torch.device) -> ImageBatch:
        mask = None if self.pixel_mask is None else self.pixel_mask.to(device)
        return ImageBatch(self.pixels.to(device), mask)

    def select(self, index: torch.Tensor) -> ImageBatch:
        return ImageBatch(self.pixels[index], None if self.pixel_mask is None else self.pixel_mask[index])


class Preprocessor:
    """Images and texts to tensors exactly as the evaluation data pipeline makes them."""

    def __init__(self, cfg: Any, tokenizer: Any):
        self.tokenizer = tokenizer
        self.max_text_len = int(cfg.max_text_len)
        json_sets = [str(name) for name in cfg.datasets if str(name).startswith("json_")]
        self.clean = (pre_question if "json_vqa" in json_sets else pre_caption) if json_sets else None
        self.max_words = int(cfg.max_words)
        self.canvas = cfg.model == "clipvil"
        if self.canvas:
            self.transform = ResizePadNormalize(cfg.image_size_min, cfg.image_size_max, bool(cfg.dynamic_padding))
        else:
            self.transform = build_transform(eval_transform_key(cfg), cfg.image_size)

    def images(self, images: Any, what: str = "images") -> ImageBatch:
        items = as_list(images, what)
        if all(torch.is_tensor(item) for item in items):
            shapes = {tuple(item.shape) for item in items}
            if len(shapes) != 1 or len(next(iter(shapes))) != 3:
                raise ValueError(f"{what}: tensors must all be (3, H, W) of one size; got shapes {sorted(shapes)}")
            return ImageBatch(torch.stack([item.float() for item in items]))
        opened = [open_image(item, i) for i, item in enumerate(items)]
        if not self.canvas:
            return ImageBatch(torch.stack([self.transform(image) for image in opened]))
        pairs = [self.transform(image) for image in opened]
        height = max(pixels.shape[1] for pixels, _ in pairs)
        width = max(pixels.shape[2] for pixels, _ in pairs)
        pad = lambda t: F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]))  # noqa: E731
        return ImageBatch(torch.stack([pad(p) for p, _ in pairs]), torch.stack([pad(m) for _, m in pairs]))

    def texts(self, texts: Any, what: str = "texts") -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention masks (B, max_text_len), padded as the datasets pad (and, for a
        model trained on ALBEF json, cleaned as they clean); a text longer than ``max_text_len``
        tokens is truncated with a warning."""
        items = as_list(texts, what)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"{what}[{i}]: expected a string, got {type(text).__name__}")
        if self.clean is not None:
            items = [self.clean(text, self.max_words) for text in items]
        full = self.tokenizer(items, truncation=False)["input_ids"]
        for i, ids in enumerate(full):
            if len(ids) > self.max_text_len:
                log.warning("%s[%d] has %d tokens; truncated to max_text_len=%d", what, i, len(ids), self.max_text_len)
        encoded = self.tokenizer(items, padding="max_length", truncation=True, max_length=self.max_text_len,
                                 return_tensors="pt")
        return encoded["input_ids"], encoded["attention_mask"]


def repeat_to(values: Sequence, count: int, what: str) -> list:
    """``values`` of length 1 repeated ``count`` times, or of length ``count`` as is."""
    if len(values) == count:
        return list(values)
    if len(values) == 1:
        return list(values) * count
    raise ValueError(f"{what}: got {len(values)} items for {count} pairs; give one or {count}")

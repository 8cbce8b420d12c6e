"""CLIP-ViL's image pipeline (fact sheet clipvil.md §2.3): resize so the short side is
``image_size_min`` with the long side capped at ``image_size_max``, pad with black pixels onto a
landscape (``min`` high × ``max`` wide) or portrait canvas, then CLIP normalisation. Returns the
image and a pixel mask (1 on the image, 0 on padding), from which the model masks grid cells.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vlkit.data.transforms import CLIP_MEAN, CLIP_STD

GRID_STRIDE = 32


def resized_size(width: int, height: int, size_min: int, size_max: int) -> tuple[int, int]:
    """``(width, height)`` after resizing: short side ``size_min``, unless the long side would then
    pass ``size_max``, in which case the short side becomes ``round(size_max · short / long)``; the
    long side is truncated, and (unlike the reference) never exceeds ``size_max``."""
    short, long = min(width, height), max(width, height)
    target = size_min
    if long / short * target > size_max:
        target = int(round(size_max * short / long))
    other = min(int(target * long / short), size_max)
    return (target, other) if width < height else (other, target)


def canvas_size(width: int, height: int, size_min: int, size_max: int) -> tuple[int, int]:
    """``(width, height)`` of the canvas for a resized image: portrait when width <= height."""
    return (size_min, size_max) if width <= height else (size_max, size_min)


class ResizePadNormalize:
    """PIL image → ``(image (3, H, W) float, pixel_mask (H, W) uint8)``.

    Fixed canvas (default): H x W is ``size_max`` x ``size_min`` or ``size_min`` x ``size_max``; the
    image sits in its middle (an odd pixel of padding goes left / top). ``dynamic=True`` pads only
    up to the next multiple of 32 on each side (the collator pads a batch to its largest image).
    """

    def __init__(self, size_min: int, size_max: int, dynamic: bool = False):
        if size_min > size_max:
            raise ValueError(f"image_size_min={size_min} is larger than image_size_max={size_max}")
        if not dynamic and (size_min % GRID_STRIDE or size_max % GRID_STRIDE):
            raise ValueError(f"image_size_min={size_min} and image_size_max={size_max} must be multiples of "
                             f"{GRID_STRIDE} (the grid's cell size), e.g. 384 and 640")
        self.size_min, self.size_max, self.dynamic = size_min, size_max, dynamic
        self.normalize = v2.Normalize(CLIP_MEAN, CLIP_STD)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        image = image.convert("RGB")
        width, height = resized_size(*image.size, self.size_min, self.size_max)
        pixels = TF.to_dtype(TF.to_image(image.resize((width, height), Image.BILINEAR)), torch.float32, scale=True)
        if self.dynamic:
            canvas_w, canvas_h = (math.ceil(side / GRID_STRIDE) * GRID_STRIDE for side in (width, height))
        else:
            canvas_w, canvas_h = canvas_size(width, height, self.size_min, self.size_max)
        left, top = math.ceil((canvas_w - width) / 2), math.ceil((canvas_h - height) / 2)
        padding = (left, canvas_w - width - left, top, canvas_h - height - top)
        mask = F.pad(torch.ones(height, width, dtype=torch.uint8), padding)
        return self.normalize(F.pad(pixels, padding)), mask


def aspect_ratio(path: str) -> float:
    """Height / width of an image file, read from its header."""
    with Image.open(path) as image:
        width, height = image.size
    return height / width

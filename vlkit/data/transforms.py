"""Image transforms by key (fact sheet §5): PIL image in, normalised float tensor (3, H, W) out.

``mae``, ``mae_randaug`` and ``mae_test`` (VLC), ``albef_*`` (ALBEF / GRIT-VLP) and ``clip``,
``clip_randaug``, ``imagenet``, ``imagenet_randaug`` (METER) give S×S; ``pixelbert`` and ``pixelbert_randaug``
(ViLT) keep the aspect ratio and give sides that are multiples of 32. All randomness comes from the
torch global RNG, so a dataset seeds it per sample (``vlkit.utils.seeding.seeded``).

RandAugment is torchvision's ``RandAugment(num_ops=2, magnitude=9)`` (31 magnitude bins), not the
reference's own op list (§5.3). The differences:

* torchvision includes Identity and lacks SolarizeAdd;
* Posterize keeps 7 bits (reference: 1 bit); Solarize thresholds at 0.7·255 (reference: 76.8);
* Brightness, Color, Contrast and Sharpness use a factor of 1 ± 0.27 with a random sign
  (reference: a fixed factor of 0.64);
* TranslateX/Y move by 0.136 of the image side (reference: 30 pixels);
* Rotate (9°), ShearX/Y (0.09), AutoContrast and Equalize agree; both draw 2 ops with replacement.
"""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
PIXELBERT_LONGER_RATIO = 1333 / 800
PIXELBERT_MULTIPLE = 32
BICUBIC = InterpolationMode.BICUBIC

ImageTransform = Callable[[Image.Image], torch.Tensor]


def _to_normalised_tensor(mean: tuple, std: tuple) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def _randaugment() -> v2.RandAugment:
    return v2.RandAugment(num_ops=2, magnitude=9)


def pixelbert_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """``(height, width)`` after pixelbert resizing of a ``width``×``height`` image.

    The shorter side becomes ``shorter``; if the longer side then exceeds
    ``int(1333 / 800 · shorter)`` both shrink so that it fits; both are rounded, then floored to a
    multiple of 32. Unlike the reference, a side never drops below 32 (the reference yields an
    empty image for extreme aspect ratios).
    """
    longer = int(PIXELBERT_LONGER_RATIO * shorter)
    scale = shorter / min(width, height)
    new_height, new_width = height * scale, width * scale
    if max(new_height, new_width) > longer:
        shrink = longer / max(new_height, new_width)
        new_height, new_width = new_height * shrink, new_width * shrink
    return tuple(
        max(PIXELBERT_MULTIPLE, int(side + 0.5) // PIXELBERT_MULTIPLE * PIXELBERT_MULTIPLE)
        for side in (new_height, new_width)
    )


class PixelBertResize:
    """Bicubic resize of a PIL image to ``pixelbert_size`` (shorter side ``shorter``)."""

    def __init__(self, shorter: int):
        self.shorter = shorter

    def __call__(self, image: Image.Image) -> Image.Image:
        height, width = pixelbert_size(image.width, image.height, self.shorter)
        return image.resize((width, height), Image.Resampling.BICUBIC)


def mae(size: int) -> ImageTransform:
    """VLC pre-training: RandomResizedCrop(scale 0.8–1, bicubic), horizontal flip, ImageNet norm."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.8, 1.0), interpolation=BICUBIC),
        v2.RandomHorizontalFlip(),
        *_to_normalised_tensor(IMAGENET_MEAN, IMAGENET_STD),
    ])


def mae_randaug(size: int) -> ImageTransform:
    """VLC fine-tuning: RandAugment(2, 9), RandomResizedCrop(scale 0.9–1, bicubic), no flip."""
    return v2.Compose([
        _randaugment(),
        v2.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=BICUBIC),
        *_to_normalised_tensor(IMAGENET_MEAN, IMAGENET_STD),
    ])


def mae_test(size: int) -> ImageTransform:
    """VLC evaluation: bicubic resize to S×S (aspect ratio not kept), ImageNet norm."""
    return v2.Compose([
        v2.Resize((size, size), interpolation=BICUBIC),
        *_to_normalised_tensor(IMAGENET_MEAN, IMAGENET_STD),
    ])


def pixelbert(size: int) -> ImageTransform:
    """ViLT: ``PixelBertResize(size)``, then mean/std 0.5 normalisation."""
    return v2.Compose([PixelBertResize(size), *_to_normalised_tensor(INCEPTION_MEAN, INCEPTION_STD)])


def pixelbert_randaug(size: int) -> ImageTransform:
    """ViLT with augmentation: RandAugment(2, 9) first, then ``pixelbert``."""
    return v2.Compose([
        _randaugment(),
        PixelBertResize(size),
        *_to_normalised_tensor(INCEPTION_MEAN, INCEPTION_STD),
    ])


def _albef_train(size: int, min_scale: float) -> ImageTransform:
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=BICUBIC),
        v2.RandomHorizontalFlip(),
        v2.RandAugment(num_ops=2, magnitude=7, num_magnitude_bins=11),
        *_to_normalised_tensor(CLIP_MEAN, CLIP_STD),
    ])


def albef_pretrain(size: int) -> ImageTransform:
    """ALBEF/GRIT pre-training (grit_albef.md §4.2): RandomResizedCrop(scale 0.2–1, bicubic), flip,
    RandAugment(2 ops, magnitude 7 of 10; torchvision's op list), CLIP normalisation."""
    return _albef_train(size, 0.2)


def albef_train(size: int) -> ImageTransform:
    """ALBEF/GRIT fine-tuning: as ``albef_pretrain`` with crop scale 0.5–1."""
    return _albef_train(size, 0.5)


def albef_test(size: int) -> ImageTransform:
    """ALBEF/GRIT evaluation: bicubic resize to S×S, CLIP normalisation."""
    return v2.Compose([
        v2.Resize((size, size), interpolation=BICUBIC),
        *_to_normalised_tensor(CLIP_MEAN, CLIP_STD),
    ])


def _resize_center_crop(size: int, mean: tuple, std: tuple) -> list:
    return [v2.Resize(size, interpolation=BICUBIC), v2.CenterCrop(size), v2.RGB(), *_to_normalised_tensor(mean, std)]


def clip(size: int) -> ImageTransform:
    """METER (meter_elip.md §4.3): bicubic resize of the shorter side to S, centre crop S×S, CLIP
    normalisation."""
    return v2.Compose(_resize_center_crop(size, CLIP_MEAN, CLIP_STD))


def clip_randaug(size: int) -> ImageTransform:
    """METER fine-tuning: RandAugment(2, 9) first, then ``clip`` (no flip)."""
    return v2.Compose([v2.RGB(), _randaugment(), *_resize_center_crop(size, CLIP_MEAN, CLIP_STD)])


def imagenet(size: int) -> ImageTransform:
    """METER's Swin input: ``clip``'s resize and crop with ImageNet normalisation."""
    return v2.Compose(_resize_center_crop(size, IMAGENET_MEAN, IMAGENET_STD))


def imagenet_randaug(size: int) -> ImageTransform:
    """RandAugment(2, 9) first, then ``imagenet``."""
    return v2.Compose([v2.RGB(), _randaugment(), *_resize_center_crop(size, IMAGENET_MEAN, IMAGENET_STD)])


TRANSFORMS: dict[str, Callable[[int], ImageTransform]] = {
    "albef_pretrain": albef_pretrain,
    "albef_train": albef_train,
    "albef_test": albef_test,
    "clip": clip,
    "clip_randaug": clip_randaug,
    "imagenet": imagenet,
    "imagenet_randaug": imagenet_randaug,
    "mae": mae,
    "mae_randaug": mae_randaug,
    "mae_test": mae_test,
    "pixelbert": pixelbert,
    "pixelbert_randaug": pixelbert_randaug,
}


DETERMINISTIC_TRANSFORMS = frozenset({"albef_test", "clip", "imagenet", "mae_test", "pixelbert"})
"""Keys of the transforms without randomness: an image's result never changes (``cache_images``)."""


def build_transform(key: str, image_size: int) -> ImageTransform:
    """The transform named ``key`` for side ``image_size``."""
    if key not in TRANSFORMS:
        raise KeyError(f"unknown transform key {key!r}; valid keys: {sorted(TRANSFORMS)}")
    return TRANSFORMS[key](image_size)

"""Image transforms: output shapes, normalisation, the pixelbert size rule, seeding."""
import pytest
import torch
from PIL import Image

from vlkit.data.transforms import TRANSFORMS, build_transform, pixelbert_size
from vlkit.utils.seeding import seeded

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])


def solid(width, height, colour=(200, 100, 50)):
    return Image.new("RGB", (width, height), colour)


def half_white(width=48, height=40):
    """White left half, black right half."""
    image = Image.new("RGB", (width, height), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, width // 2, height))
    return image


@pytest.mark.parametrize("key", ["mae", "mae_randaug", "mae_test"])
def test_mae_keys_give_square_float_images(key):
    with seeded(0):
        out = build_transform(key, 32)(solid(50, 37))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize("key", ["mae_test", "mae"])
def test_imagenet_normalisation_of_a_solid_colour(key):
    with seeded(0):
        out = build_transform(key, 32)(solid(40, 40))
    expected = (torch.tensor([200, 100, 50]) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    torch.testing.assert_close(out.mean(dim=(1, 2)), expected, atol=0.02, rtol=0)


@pytest.mark.parametrize("key", ["pixelbert", "pixelbert_randaug"])
def test_pixelbert_keys_keep_aspect_and_normalise_to_half(key):
    with seeded(0):
        out = build_transform(key, 64)(solid(100, 50, (128, 128, 128)))
    # shorter 64, longer cap int(1333/800*64)=106: 50x100 -> 64x128 -> 53x106 -> floors 32x96
    assert out.shape == (3, 32, 96)
    if key == "pixelbert":
        torch.testing.assert_close(out, torch.full_like(out, 128 / 255 * 2 - 1), atol=0.01, rtol=0)


@pytest.mark.parametrize(
    ("width", "height", "shorter", "expected"),
    [
        (640, 480, 384, (384, 512)),   # long side 512 fits under 639
        (480, 640, 384, (512, 384)),
        (500, 500, 384, (384, 384)),
        (1000, 200, 384, (128, 608)),  # 384x1920 shrinks to 127.8x639, rounds to 128x639
        (800, 600, 800, (800, 1056)),  # 1066.67 rounds to 1067, floors to 1056
        (2000, 10, 64, (32, 96)),      # would floor to 0; clamped to one 32-pixel row
    ],
)
def test_pixelbert_size_hand_computed(width, height, shorter, expected):
    assert pixelbert_size(width, height, shorter) == expected


def test_mae_flips_and_mae_test_does_not():
    def left_is_brighter(key, seed):
        with seeded(seed):
            out = build_transform(key, 32)(half_white())
        return bool(out[:, :, :8].mean() > out[:, :, -8:].mean())

    assert {left_is_brighter("mae", seed) for seed in range(30)} == {True, False}
    assert {left_is_brighter("mae_test", seed) for seed in range(30)} == {True}


@pytest.mark.parametrize("key", ["mae", "mae_randaug", "pixelbert_randaug"])
def test_random_transforms_follow_the_seed(key):
    transform = build_transform(key, 32)
    image = Image.radial_gradient("L").convert("RGB").resize((45, 38))

    def run(seed):
        with seeded(seed):
            return transform(image)

    assert torch.equal(run(3), run(3))
    assert any(not torch.equal(run(3), run(seed)) for seed in range(4, 8))


def test_unknown_key_lists_valid_keys():
    with pytest.raises(KeyError) as info:
        build_transform("swin_test", 32)
    for key in TRANSFORMS:
        assert key in str(info.value)

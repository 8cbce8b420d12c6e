"""The recipe's numbers: layer-decay groups (hand-computed for 2 blocks), lr from blr, the
schedule against the reference's formula, loss selection, mixup targets and the transforms."""
import math

import pytest
import torch
from PIL import Image
from timm.data import RandomResizedCropAndInterpolation
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torchvision import transforms as T

from conftest import TINY_MODEL, parse
from vlkit.imagenet.data import build_transform, posterize
from vlkit.imagenet.models import build_classifier
from vlkit.imagenet.recipe import (
    build_criterion,
    build_mixup,
    build_optimizer,
    build_scheduler,
    effective_batch_size,
    peak_lr,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _args(*extra):
    return parse([*TINY_MODEL, "--device", "cpu", "--nb_classes", "7", *map(str, extra)])


def _groups_by_name(model, optimizer):
    owner = {id(p): name for name, p in model.named_parameters()}
    return {owner[id(p)]: (group["lr_scale"], group["weight_decay"])
            for group in optimizer.param_groups for p in group["params"]}


def test_layer_decay_scales_match_a_hand_computation_for_two_blocks():
    # L = depth + 1 = 3; scale = 0.5 ** (3 - layer): embeddings layer 0, block i layer i + 1,
    # fc_norm / head layer 3. No decay: 1-D tensors and pos_embed / cls_token.
    args = _args("--layer_decay", 0.5, "--weight_decay", 0.05, "--lr", 1e-3)
    model = build_classifier(args)
    groups = _groups_by_name(model, build_optimizer(model, args, lr=1e-3))
    expected = {
        "cls_token": (0.125, 0.0), "pos_embed": (0.125, 0.0),
        "patch_embed.proj.weight": (0.125, 0.05), "patch_embed.proj.bias": (0.125, 0.0),
        "fc_norm.weight": (1.0, 0.0), "fc_norm.bias": (1.0, 0.0),
        "head.weight": (1.0, 0.05), "head.bias": (1.0, 0.0),
    }
    for block, scale in ((0, 0.25), (1, 0.5)):
        for part in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            expected[f"blocks.{block}.{part}.bias"] = (scale, 0.0)
            expected[f"blocks.{block}.{part}.weight"] = (scale, 0.0 if "norm" in part else 0.05)
    assert groups == expected


def test_cls_token_pooling_puts_the_final_norm_on_the_top_layer():
    args = _args("--layer_decay", 0.5, "--cls_token")
    model = build_classifier(args)
    groups = _groups_by_name(model, build_optimizer(model, args, lr=1e-3))
    assert "fc_norm.weight" not in groups
    assert groups["norm.weight"] == (1.0, 0.0) and groups["blocks.1.mlp.fc1.weight"] == (0.5, 0.05)


def test_lr_is_blr_times_effective_batch_over_256_unless_given():
    args = _args("--batch_size", 8, "--accum_iter", 2, "--blr", 5e-4)
    assert effective_batch_size(args, world_size=4) == 64
    assert peak_lr(args, world_size=4) == pytest.approx(5e-4 * 64 / 256)
    assert peak_lr(_args("--lr", 0.3, "--blr", 5e-4), world_size=4) == 0.3


def _reference_lr(lr, min_lr, warmup, epochs, epoch):
    """The reference's schedule at a fractional epoch: linear warm-up, then half cosine."""
    if epoch < warmup:
        return lr * epoch / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))


def test_schedule_follows_the_reference_formula_at_fractional_epochs_in_every_group():
    args = _args("--epochs", 6, "--warmup_epochs", 2, "--min_lr", 1e-5, "--layer_decay", 0.5)
    model = build_classifier(args)
    optimizer = build_optimizer(model, args, lr=2e-3)
    iters = 10
    scheduler = build_scheduler(optimizer, args, iters)
    for step in (0, 1, 7, 19, 20, 21, 33, 45, 59):
        scheduler.step_update(step)
        expected = _reference_lr(2e-3, 1e-5, 2, 6, step / iters)
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(expected * group["lr_scale"], rel=1e-9, abs=1e-15)


def test_loss_follows_mixup_and_smoothing():
    assert isinstance(build_criterion(_args(), build_mixup(_args())), LabelSmoothingCrossEntropy)
    assert isinstance(build_criterion(_args("--smoothing", 0), None), torch.nn.CrossEntropyLoss)
    args = _args("--mixup", 0.8, "--cutmix", 1.0, "--batch_size", 4)
    mixup = build_mixup(args)
    assert isinstance(build_criterion(args, mixup), SoftTargetCrossEntropy)
    torch.manual_seed(0)
    _, targets = mixup(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert targets.shape == (4, 7)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    assert targets.min() >= 0.1 / 7 - 1e-7  # label smoothing 0.1 spread over the 7 classes


def _picture(size=(50, 40)):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=generator)
    return Image.fromarray(pixels.numpy())


@pytest.mark.parametrize("input_size, resize", [(32, int(32 / 0.875)), (256, 256)])
def test_eval_transform_is_resize_then_centre_crop_bicubic(input_size, resize):
    args = _args("--input_size", input_size)
    expected = T.Compose([T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(input_size),
                          T.ToTensor(), T.Normalize(MEAN, STD)])
    image = _picture()
    torch.testing.assert_close(build_transform(False, args)(image), expected(image))


def test_train_transform_holds_the_reference_augmentations():
    transform = build_transform(True, _args("--reprob", 0.3, "--recount", 2))
    steps = {type(step): step for step in transform.transforms}
    crop = steps[RandomResizedCropAndInterpolation]
    assert crop.size == (32, 32) and crop.scale == (0.08, 1.0)
    assert steps[T.RandomHorizontalFlip].p == 0.5
    rand = steps[RandAugment]
    assert rand.num_layers == 2 and {op.magnitude for op in rand.ops} == {9}
    assert all(op.aug_fn is posterize for op in rand.ops if op.name.startswith("Posterize"))
    erasing = steps[RandomErasing]
    assert (erasing.probability, erasing.mode, erasing.max_count) == (0.3, "pixel", 2)


def test_posterize_to_zero_bits_gives_black_instead_of_an_error():
    image = _picture()
    assert posterize(image, 0).getextrema() == ((0, 0), (0, 0), (0, 0))
    assert posterize(image, 8) is image
    assert posterize(image, 2).getextrema()[0][1] <= 0b11000000

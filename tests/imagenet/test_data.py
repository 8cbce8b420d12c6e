"""ImageFolder data: unreadable files skipped (evaluation) or replaced (training) and counted,
class indices shared by train and val, and the synthetic tree itself."""
import io
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import NUM_CLASSES, TRAIN_IMAGES, VAL_IMAGES, parse, tiny_args
from vlkit.imagenet.args import get_args_parser
from vlkit.data.synthetic import IMAGEFOLDER_CLASSES
from vlkit.data.synthetic_scenes import BACKGROUND, COLORS
from vlkit.imagenet.data import build_loaders, collate_skipping
from vlkit.imagenet.evaluate import evaluate
from vlkit.imagenet.models import build_classifier


def _jpeg(color, size=32):
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture()
def damaged(tmp_path):
    """3 classes x 3 images in train/ and val/; in each split one file is garbage and one a
    truncated JPEG."""
    for split in ("train", "val"):
        for k, name in enumerate(("a", "b", "c")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"{i}.jpg").write_bytes(_jpeg((80 * k, 40 * i, 0)))
        (tmp_path / split / "a" / "1.jpg").write_bytes(b"not an image at all")
        (tmp_path / split / "c" / "2.jpg").write_bytes(_jpeg((1, 2, 3), size=64)[:200])
    return tmp_path


def _args(root, out, *extra):
    return parse(tiny_args(root, out, "--nb_classes", 3, "--batch_size", 4, *extra))


def test_unreadable_validation_images_are_left_out_and_counted(damaged, tmp_path):
    args = _args(damaged, tmp_path / "out")
    loaders = build_loaders(args, rank=0, world_size=1, pin_memory=False, with_train=False)
    batches = list(loaders.val)
    assert sum(len(targets) for _, targets, _ in batches) == 7
    assert sum(skipped for _, _, skipped in batches) == 2
    torch.manual_seed(0)
    stats = evaluate(build_classifier(args), loaders.val, torch.device("cpu"), sharded=False)
    assert (stats["count"], stats["num_skipped"]) == (7, 2)


def test_unreadable_training_images_are_replaced_by_the_next_readable_one_and_counted(damaged, tmp_path):
    args = _args(damaged, tmp_path / "out")
    train = build_loaders(args, rank=0, world_size=1, pin_memory=False).train.dataset
    bad = train.samples.index((str(damaged / "train" / "a" / "1.jpg"), 0))
    image, target, skipped = train[(bad, 123)]
    again, next_target, next_skipped = train[(bad + 1, 123)]
    assert (target, skipped, next_target, next_skipped) == (0, 1, 0, 0)
    torch.testing.assert_close(image, again)  # the same file under the same seed
    images, targets, total = collate_skipping([train[(i, 7)] for i in range(len(train))])
    assert images.shape == (9, 3, 32, 32) and total == 2
    # a/1 is replaced by a/2, and c/2 (the last file) by a/0, wrapping around
    assert Counter(targets.tolist()) == {0: 4, 1: 3, 2: 2}


def test_validation_uses_the_training_class_indices(damaged, tmp_path):
    (damaged / "val" / "a").rename(tmp_path / "moved")  # val lacks class a
    args = _args(damaged, tmp_path / "out")
    loaders = build_loaders(args, rank=0, world_size=1, pin_memory=False)
    assert loaders.val.dataset.class_to_idx == {"a": 0, "b": 1, "c": 2}
    assert set(loaders.val.dataset.targets) == {1, 2}
    evaluation_only = build_loaders(args, rank=0, world_size=1, pin_memory=False, with_train=False)
    assert evaluation_only.val.dataset.targets == loaders.val.dataset.targets
    (damaged / "val" / "zebra").mkdir()
    (damaged / "val" / "zebra" / "0.jpg").write_bytes(_jpeg((0, 0, 0)))
    with pytest.raises(ValueError, match="zebra"):
        build_loaders(args, rank=0, world_size=1, pin_memory=False)


def test_missing_split_and_too_few_classes_are_refused(damaged, tmp_path):
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        build_loaders(_args(damaged / "val", tmp_path), rank=0, world_size=1, pin_memory=False)
    with pytest.raises(ValueError, match="--nb_classes 3"):
        build_loaders(_args(damaged, tmp_path, "--nb_classes", 2), rank=0, world_size=1, pin_memory=False)


def test_synthetic_tree_has_one_balanced_class_per_coloured_shape(tree):
    assert sorted(p.name for p in (tree / "train").iterdir()) == sorted(IMAGEFOLDER_CLASSES)
    assert len(IMAGEFOLDER_CLASSES) == NUM_CLASSES == len(COLORS) * 3
    counts = {split: Counter(p.parent.name for p in (tree / split).glob("*/*.jpg")) for split in ("train", "val")}
    assert set(counts["train"].values()) == {TRAIN_IMAGES // NUM_CLASSES}
    assert sum(counts["val"].values()) == VAL_IMAGES and max(counts["val"].values()) - min(counts["val"].values()) <= 1
    for path in sorted((tree / "train").glob("*/00000[0-9].jpg")):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float).reshape(-1, 3)
        shape = pixels[np.abs(pixels - BACKGROUND).sum(1) > 90]  # pixels far from the gray background
        assert len(shape) > 40, path
        nearest = min(COLORS, key=lambda name: np.abs(shape.mean(0) - COLORS[name]).sum())
        assert path.parent.name.startswith(nearest + "_"), path


def test_nb_classes_is_read_from_the_training_folder(damaged, tmp_path):
    from vlkit.imagenet.data import resolve_nb_classes

    args = parse(tiny_args(damaged, tmp_path / "out"))
    args.nb_classes = None  # as when --nb_classes is not given
    assert resolve_nb_classes(args) == 3 and args.nb_classes == 3
    args.nb_classes = 5  # more outputs than classes is allowed (a head for later classes)
    assert resolve_nb_classes(args) == 5
    args.nb_classes = 2
    with pytest.raises(ValueError, match=r"--nb_classes 2 is smaller than the 3 class folders of .*train.*--nb_classes 3"):
        resolve_nb_classes(args)
    assert get_args_parser().parse_args([]).nb_classes is None

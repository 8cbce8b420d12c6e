"""Shared set-up of the ImageNet fine-tuning tests: a synthetic ImageFolder tree, the tiny model's
arguments and one short training run that several tests read."""
import sys
from pathlib import Path

import pytest

from vlkit.data.synthetic import IMAGEFOLDER_CLASSES, write_imagefolder
from vlkit.imagenet.args import check_args, get_args_parser
from vlkit.cli.imagenet import main

HERE = Path(__file__).parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

NUM_CLASSES = len(IMAGEFOLDER_CLASSES)
TRAIN_IMAGES = 16 * NUM_CLASSES
VAL_IMAGES = 45
"""Odd, so no world size above 1 divides it."""
EPOCHS = 5
TINY_MODEL = ["--model", "vit_tiny_patch16", "--depth", "2", "--embed_dim", "48", "--num_heads", "2",
              "--patch_size", "8", "--input_size", "32"]


def tiny_args(data_path, output_dir, *extra):
    """Command-line words for a CPU run of the tiny model on ``data_path``."""
    return [*TINY_MODEL, "--data_path", str(data_path), "--nb_classes", str(NUM_CLASSES),
            "--device", "cpu", "--num_workers", "0", "--output_dir", str(output_dir),
            "--log_dir", str(output_dir), *map(str, extra)]


def parse(words):
    return check_args(get_args_parser().parse_args(words))


@pytest.fixture(scope="session")
def tree(tmp_path_factory):
    """The synthetic ImageFolder tree at 32 px: 16 training images per class, 45 validation."""
    out = tmp_path_factory.mktemp("synth")
    info = write_imagefolder(str(out), TRAIN_IMAGES, VAL_IMAGES, seed=0, image_size=32)
    return Path(info["root"])


@pytest.fixture(scope="session")
def trained(tree, tmp_path_factory):
    """A short run of the default recipe (RandAugment, random erasing, label smoothing, drop path,
    layer decay) without mixup: ``(output_dir, the returned summary)``."""
    out = tmp_path_factory.mktemp("run")
    args = parse(tiny_args(tree, out, "--batch_size", 32, "--epochs", EPOCHS, "--warmup_epochs", 1,
                           "--lr", "3e-3", "--layer_decay", "0.9"))
    return out, main(args)


def run_crashing_in_epoch(monkeypatch, words, epoch: int) -> None:
    """``main_finetune.py words`` stopped by an error as epoch ``epoch`` begins (its checkpoints
    up to epoch ``epoch - 1`` written)."""
    from vlkit.cli import imagenet as main_module
    from vlkit.imagenet.train import train_one_epoch

    def crash(model, loader, at, args, ctx):
        if at == epoch:
            raise RuntimeError("simulated crash")
        return train_one_epoch(model, loader, at, args, ctx)

    with monkeypatch.context() as patch:
        patch.setattr(main_module, "train_one_epoch", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            main(parse(words))

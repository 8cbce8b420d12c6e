"""Throughput of the ImageNet fine-tuning recipe (``main_finetune.py``) on this machine.

Three figures, images per second: the training transform alone (JPEG decode, RandomResizedCrop,
flip, RandAugment, random erasing), the model's training step alone (forward, backward, AdamW over
the layer-decay groups, random tensors) and whole epochs of ``main_finetune.py`` on the synthetic
ImageFolder tree (data, mixup, step, evaluation and outputs included; loader in the main process).

    python benchmarks/imagenet.py                                    # the tiny model at 32 px
    python benchmarks/imagenet.py --model vit_base_patch16 --input_size 224 --batch_size 8 --epochs 0
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from vlkit.data.synthetic import IMAGEFOLDER_CLASSES, write_imagefolder
from vlkit.imagenet.args import check_args, get_args_parser
from vlkit.imagenet.data import build_datasets
from vlkit.cli.imagenet import main
from vlkit.imagenet.models import build_classifier
from vlkit.imagenet.recipe import build_optimizer

TINY = ["--model", "vit_tiny_patch16", "--depth", "2", "--embed_dim", "64", "--num_heads", "2", "--patch_size", "8"]


def recipe_args(options: argparse.Namespace, data_path: str, output_dir: str) -> argparse.Namespace:
    size = TINY if options.model == "tiny" else ["--model", options.model]
    words = [*size, "--input_size", str(options.input_size), "--batch_size", str(options.batch_size),
             "--nb_classes", str(len(IMAGEFOLDER_CLASSES)), "--device", options.device, "--num_workers", "0",
             "--data_path", data_path, "--output_dir", output_dir, "--log_dir", output_dir,
             "--mixup", "0.8", "--cutmix", "1.0", "--epochs", str(max(options.epochs, 1)), "--warmup_epochs", "1"]
    return check_args(get_args_parser().parse_args(words))


def transform_rate(args: argparse.Namespace, images: int) -> float:
    train, _ = build_datasets(args)
    started = time.perf_counter()
    for index in range(images):
        train[(index % len(train), index)]
    return images / (time.perf_counter() - started)


def step_rate(args: argparse.Namespace, steps: int) -> float:
    device = torch.device(args.device)
    model = build_classifier(args).to(device).train()
    optimizer = build_optimizer(model, args, lr=1e-3)
    images = torch.randn(args.batch_size, 3, args.input_size, args.input_size, device=device)
    targets = torch.randint(0, args.nb_classes, (args.batch_size,), device=device)
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        torch.nn.functional.cross_entropy(model(images), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * args.batch_size / (time.perf_counter() - started)


def epoch_rate(args: argparse.Namespace, train_images: int) -> float:
    started = time.perf_counter()
    main(args)
    return args.epochs * train_images / (time.perf_counter() - started)


def run(options: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        tree = write_imagefolder(scratch, options.train_images, options.val_images, seed=0, image_size=64)
        args = recipe_args(options, tree["root"], str(Path(scratch) / "run"))
        result = {
            "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "model": options.model,
            "input_size": options.input_size, "batch_size": options.batch_size, "device": options.device,
            "transform_images_per_s": transform_rate(args, options.transform_images),
            "step_images_per_s": step_rate(args, options.steps),
        }
        if options.epochs:
            result["epoch_images_per_s"] = epoch_rate(args, options.train_images)
            result["epochs"] = options.epochs
    return result


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (2 blocks, width 64, patch 8) or a MODELS name")
    parser.add_argument("--input_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--transform_images", type=int, default=512)
    parser.add_argument("--train_images", type=int, default=576)
    parser.add_argument("--val_images", type=int, default=90)
    parser.add_argument("--epochs", type=int, default=2, help="whole epochs of main_finetune.py (0: skip)")
    parser.add_argument("--json", help="also write the result to this file")
    options = parser.parse_args()
    result = run(options)
    print(json.dumps(result, indent=2))
    if options.json:
        Path(options.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main_cli()

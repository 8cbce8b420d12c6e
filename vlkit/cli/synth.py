"""The synthetic data set for ``vlkit data synth`` and ``vlkit quickstart``, and the run arguments that use it."""
from __future__ import annotations

from typing import Any


def synthesize(out: str, images: int, seed: int, image_size: int) -> dict[str, Any]:
    from vlkit.data.synthetic import write_synthetic

    return write_synthetic(out, num_images=images, seed=seed, image_size=image_size, progress=True)


def data_arguments(data_root: str, info: dict[str, Any]) -> str:
    """The ``key=value`` words that point a run at a synthetic set."""
    return (f"data_root={data_root} tokenizer={info['tokenizer']} vocab_size={info['vocab_size']} "
            f"vqav2_label_size={info['vqav2_label_size']}")


def imagenet_arguments(info: dict[str, Any]) -> str:
    """``vlkit imagenet`` arguments for a short CPU run on a synthetic set's ImageFolder tree."""
    tree = info["imagefolder"]
    return (f"--data_path {tree['root']} --nb_classes {len(tree['classes'])} --model vit_tiny_patch16 "
            "--depth 2 --embed_dim 64 --num_heads 2 --patch_size 8 --input_size 32 --batch_size 32 "
            "--epochs 30 --warmup_epochs 3 --lr 2e-3 --device cpu --num_workers 2 "
            "--output_dir runs/imagenet_synth --log_dir runs/imagenet_synth")

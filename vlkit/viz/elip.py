"""``vlkit viz elip``: which patches ELIP kept and merged at each pruning stage, over the image.

The model comes from a checkpoint and the ``config.yaml`` of its run (``RUN/config.yaml`` beside
``RUN/checkpoints/*.ckpt``), with presets and overrides after ``with`` applied on top; pruning is
switched on for evaluation so the picture shows what the configured stages do. One panel per
stage over the model's input image on the real patch grid: kept patches as they are, patches
merged at this stage tinted red, patches merged at an earlier stage greyed out.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from vlkit.config import ConfigError, resolve_config
from vlkit.models.token_reduction import FUSED, PHASES, PruneTrace, token_pruners

USAGE = "vlkit viz elip --image IMG --text TEXT --checkpoint CKPT [--out PNG] [with NAME... key=value...]"
MERGED_NOW = np.array([0.85, 0.1, 0.1])
MERGED_BEFORE_SHADE = 0.25


def run_config(checkpoint: str, words: Sequence[str]) -> Any:
    """The config of the checkpoint's run (its ``config.yaml`` when there is one) with ``words``
    (``NAME... key=value...``) on top, loading ``checkpoint`` and pruning in every phase."""
    saved = Path(checkpoint).resolve().parent.parent / "config.yaml"
    values = OmegaConf.to_container(OmegaConf.load(saved)) if saved.is_file() else None
    if values is None and not words:
        raise ConfigError(
            f"no config.yaml beside the run of {checkpoint} ({saved}): describe the model after `with`, "
            "e.g. `with task_mlm_itm_mae tiny elip_tiny tokenizer=DIR`"
        )
    cfg = resolve_config(list(words), values=values, source=str(saved))
    cfg.load_path, cfg.pretrain_path = str(checkpoint), ""
    cfg.img_prune_phases = list(PHASES)
    if not (cfg.img_prune or {}).get("begin_layer"):
        raise ConfigError(
            "the model prunes no tokens (img_prune is empty): add an ELIP preset after `with`, e.g. "
            "`with elip_tiny` (2-block tiny models) or `elip_meter` / `elip_albef` / `elip_vlc`"
        )
    return cfg


def model_input(cfg: Any, image_path: str) -> torch.Tensor:
    """The image as the model sees it in evaluation (the first ``val_transform_keys`` transform)."""
    from vlkit.data.transforms import build_transform

    if not Path(image_path).is_file():
        raise ConfigError(f"--image {image_path}: no such file")
    image = Image.open(image_path).convert("RGB")
    return build_transform(cfg.val_transform_keys[0], cfg.image_size)(image)


@torch.no_grad()
def prune_trace(model: torch.nn.Module, cfg: Any, image: torch.Tensor, text: str) -> PruneTrace:
    """One forward pass of (image, text) through ``model.infer``; the pruner's trace of it."""
    from vlkit.data.tokenizer import encode_text, load_tokenizer

    encoded = encode_text(load_tokenizer(cfg.tokenizer), text, cfg.max_text_len)
    pruners = [pruner for pruner in token_pruners(model) if pruner.enabled]
    if not pruners:
        raise ValueError(f"the {cfg.model} model was built without a token pruner; check img_prune")
    model.eval().infer(encoded["ids"][None], encoded["masks"][None], image[None])
    return pruners[0].last_trace


def display_image(image: torch.Tensor) -> np.ndarray:
    """(3, S, S) normalised input as an (S, S, 3) array in [0, 1], stretched per channel."""
    array = image.permute(1, 2, 0).float().numpy()
    low, high = array.min(axis=(0, 1)), array.max(axis=(0, 1))
    return (array - low) / np.maximum(high - low, 1e-6)


def stage_picture(image: np.ndarray, grid: int, kept: np.ndarray, merged: np.ndarray) -> np.ndarray:
    """``image`` with patches of ``merged`` (this stage) tinted red and every patch in neither
    ``kept`` nor ``merged`` (merged earlier) darkened; indices are row-major on a ``grid``²."""
    side = image.shape[0] // grid
    out = image.copy()
    for patch in range(grid * grid):
        rows = slice((patch // grid) * side, (patch // grid + 1) * side)
        cols = slice((patch % grid) * side, (patch % grid + 1) * side)
        if patch in merged:
            out[rows, cols] = 0.5 * out[rows, cols] + 0.5 * MERGED_NOW
        elif patch not in kept:
            out[rows, cols] = MERGED_BEFORE_SHADE * out[rows, cols].mean(axis=-1, keepdims=True)
    return out


def draw(trace: PruneTrace, image: torch.Tensor, text: str, out: str) -> None:
    """Write the picture: the input, then one panel per pruning stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = math.isqrt(trace.num_patches)
    picture = display_image(image)
    panels = len(trace.stages) + 1
    figure, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.6), squeeze=False)
    axes[0, 0].imshow(picture)
    axes[0, 0].set_title(f"input ({grid}×{grid} patches)", fontsize=9)
    for axis, stage in zip(axes[0, 1:], trace.stages):
        kept = stage.kept[0].cpu().numpy()
        merged = stage.merged[0].cpu().numpy()
        axis.imshow(stage_picture(picture, grid, kept[kept != FUSED], merged[merged != FUSED]))
        note = " (+ fused kept)" if FUSED in kept else (" (+ fused re-merged)" if FUSED in merged else "")
        axis.set_title(f"before block {stage.block}: keep {int((kept != FUSED).sum())}, "
                       f"merge {int((merged != FUSED).sum())}{note}", fontsize=8)
    for axis in axes[0]:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"ELIP on “{text}”: red = merged at this stage, dark = merged earlier", fontsize=9)
    figure.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)


def visualise(image_path: str, text: str, checkpoint: str, out: str, words: Sequence[str] = ()) -> PruneTrace:
    """Build the checkpoint's model, run (image, text) and write the picture to ``out``."""
    from vlkit.models.build import build_model

    if not Path(checkpoint).is_file():
        raise ConfigError(f"--checkpoint {checkpoint}: no such file")
    cfg = run_config(checkpoint, words)
    model = build_model(cfg)
    image = model_input(cfg, image_path)
    trace = prune_trace(model, cfg, image, text)
    draw(trace, image, text, out)
    return trace


def command_elip(argv: Sequence[str]) -> int:
    argv = list(argv)
    words = argv[argv.index("with") + 1:] if "with" in argv else []
    options = argv[: argv.index("with")] if "with" in argv else argv
    parser = argparse.ArgumentParser(prog="vlkit viz elip", usage=USAGE)
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--text", required=True, help="the caption or question the patches are scored against")
    parser.add_argument("--checkpoint", required=True, help="a vlkit checkpoint (RUN/checkpoints/*.ckpt)")
    parser.add_argument("--out", default="elip.png", help="PNG to write (default elip.png)")
    args = parser.parse_args(options)
    trace = visualise(args.image, args.text, args.checkpoint, args.out, words)
    counts = ", ".join(f"block {s.block}: {s.kept.shape[1]} kept" for s in trace.stages)
    print(f"wrote {args.out} ({counts}; image tokens per block {trace.tokens_per_block})")
    return 0

"""``vlkit quickstart``: synthetic data, then a short ``tiny`` VLC pre-training on CPU, then a table
of what it learned against chance, and where everything was written."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from vlkit.cli import data_arguments, synthesize, train_or_test
from vlkit.config import resolve_config

QUICKSTART_PRESETS = ("task_mlm_itm_mae", "tiny")
ITM_NOTE = (
    "ITM is still at chance: trained jointly with MLM from a randomly initialised ViT it needs far\n"
    "more steps (VLC starts from an MAE-pretrained ViT: pretrain_path=). Trained without MLM\n"
    "(loss_names.mlm=0) the same tiny model passes 0.75 within 400 steps on this data."
)


def quickstart_arguments(out: Path, info: dict[str, Any], steps: int) -> list[str]:
    """The ``with`` words of the quickstart run."""
    return [
        *QUICKSTART_PRESETS,
        *data_arguments(str(out / "data"), info).split(),
        f"log_dir={out / 'runs'}",
        "run_name=vlc_tiny",
        f"max_steps={steps}",
        f"val_check_interval={max(1, steps // 4)}",
        "warmup_steps=0.1",
        "learning_rate=1e-3",
        "itm_patch_drop=False",
    ]


def load_or_synthesize(data_dir: Path, images: int, seed: int) -> dict[str, Any]:
    """The synthetic set in ``data_dir``, written first unless one with these arguments is there."""
    info_path = data_dir / "synth_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("num_images") == images and info.get("seed") == seed:
            print(f"reusing the synthetic set in {data_dir}")
            return info
    return synthesize(str(data_dir), images, seed, image_size=64)


def results_table(metrics: dict[str, float]) -> str:
    """Validation accuracy of each pre-training head next to its chance level."""
    rows = [("metric", "value", "chance")]
    for term, label in (("mlm", "MLM accuracy (masked tokens)"), ("itm", "ITM accuracy")):
        if f"{term}_accuracy" in metrics:
            rows.append((label, f"{metrics[f'{term}_accuracy']:.3f}", f"{metrics[f'{term}_chance']:.3f}"))
    if "mae_loss" in metrics:
        rows.append(("MAE loss (normalised pixels)", f"{metrics['mae_loss']:.3f}", "~1.0"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def command_quickstart(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlkit quickstart", description=__doc__)
    parser.add_argument("--out", default="runs/quickstart", help="folder for data and runs")
    parser.add_argument("--images", type=int, default=600, help="synthetic scenes (default 600)")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    info = load_or_synthesize(out / "data", args.images, args.seed)
    cfg = resolve_config([*quickstart_arguments(out, info, args.steps), f"seed={args.seed}"])
    result = train_or_test(cfg)
    run_dir = Path(result["run_dir"])
    print("\nvalidation after", result["global_step"], "steps (synthetic coco + gcc val):")
    metrics = result["val"] or {}
    print(results_table(metrics))
    if metrics.get("itm_accuracy", 1.0) < metrics.get("itm_chance", 0.0) + 0.05:
        print(ITM_NOTE)
    print(f"\nrun folder   {run_dir}\nconfig       {run_dir / 'config.yaml'}\nmetrics      "
          f"{run_dir / 'metrics.jsonl'}\nloss curves  {run_dir / 'plots'}\ncheckpoint   "
          f"{result['best_checkpoint'] or result['last_checkpoint']}")
    return 0

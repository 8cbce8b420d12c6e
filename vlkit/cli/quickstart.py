"""``vlkit quickstart``: synthetic data, then VLC's whole recipe at ``tiny`` size on CPU: a short MAE
image pre-training of the vision tower, vision-language pre-training from it, then VQAv2, NLVR2,
retrieval and SNLI-VE fine-tuned from that checkpoint and from scratch, with one table (and a
plot) of what pre-training bought, against the same model shown blank images and against chance."""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from vlkit.cli.synth import data_arguments, synthesize
from vlkit.cli.training import train_or_test
from vlkit.config import resolve_config
from vlkit.data.synthetic import FORMAT_VERSION

PRETRAIN_PRESETS = ("task_mlm_itm_mae", "tiny")
PLOT_FILE = "quickstart.png"
RESULTS_FILE = "quickstart.json"


@dataclass(frozen=True)
class Finetune:
    """One downstream task of the quickstart: its preset, the metric shown and its chance level."""

    label: str
    preset: str
    metric: str
    metric_label: str
    chance: str
    """Key of the chance level in the validation metrics ("" when computed from the data)."""
    steps: int
    overrides: tuple[str, ...] = ()


FINETUNES = (
    # VQA needs the most steps: a tiny model learns each question type's answer prior first and
    # reads the image only later (docs/results.md: at 100 steps it barely looks, at 400 it does)
    Finetune("VQAv2", "task_finetune_vqa_mae_randaug", "vqa_accuracy", "VQA accuracy", "chance", 400),
    # NLVR2 at 100 steps stayed near chance (image gain 0.03 ± 0.06 over 3 seeds; 0.06 at 300)
    Finetune("NLVR2", "task_finetune_nlvr2_mae_randaug", "dev_accuracy", "dev accuracy", "dev_chance", 300),
    Finetune("F30K retrieval", "task_finetune_irtr_f30k_mae_randaug", "r_mean", "mean recall@1/5/10", "",
             200, ("draw_false_text=3",)),
    Finetune("SNLI-VE", "task_finetune_snli_mae_randaug", "dev_accuracy", "dev accuracy", "dev_chance", 300,
             ("learning_rate=1e-3", "layer_decay=1")),
)


def mae_checkpoint(out: Path, name: str = "mae_pretrain") -> Path:
    """The MAE-layout checkpoint that the MAE run ``name`` under ``out`` writes."""
    return out / f"{name}.pth"


def mae_arguments(out: Path, info: dict[str, Any], steps: int, name: str = "mae_pretrain") -> list[str]:
    """The ``with`` words of the quickstart's MAE image pre-training (on the caption datasets' images)."""
    return [
        "task_mae_pretrain", "tiny",
        *data_arguments(str(out / "data"), info).split(),
        f"log_dir={out / 'runs'}",
        f"run_name={name}",
        f"max_steps={steps}",
        f"val_check_interval={steps}",
        "warmup_steps=0.05",
        "learning_rate=1e-3",
        f"mae_checkpoint={mae_checkpoint(out, name)}",
    ]


def pretrain_arguments(out: Path, info: dict[str, Any], steps: int, mae_vit: str = "") -> list[str]:
    """The ``with`` words of the quickstart pre-training run (from the MAE ViT file ``mae_vit`` when given)."""
    return [
        *PRETRAIN_PRESETS,
        *data_arguments(str(out / "data"), info).split(),
        f"log_dir={out / 'runs'}",
        "run_name=pretrain",
        f"max_steps={steps}",
        f"val_check_interval={steps}",
        "warmup_steps=0.1",
        "learning_rate=1e-3",
        "itm_patch_drop=False",
        "loss_names.itc=1",
        "eval_image_ablation=True",
        f"pretrain_path={mae_vit}",
    ]


def finetune_arguments(out: Path, info: dict[str, Any], task: Finetune, scale: float, load_path: str) -> list[str]:
    """The ``with`` words of one quickstart fine-tuning run (no augmentation: 64-px scenes of
    coloured shapes lose their answers to RandAugment's colour operations)."""
    origin = "pretrained" if load_path else "scratch"
    steps = max(1, round(task.steps * scale))
    return [
        task.preset, "tiny",
        *data_arguments(str(out / "data"), info).split(),
        f"log_dir={out / 'runs'}",
        f"run_name={task.preset}_{origin}",
        f"load_path={load_path}",
        f"max_steps={steps}",
        f"val_check_interval={steps}",
        "warmup_steps=0.1",
        "learning_rate=5e-4",
        "train_transform_keys=[mae_test]",
        "cache_images=True",
        "eval_image_ablation=True",
        *task.overrides,
    ]


def load_or_synthesize(data_dir: Path, images: int, seed: int) -> dict[str, Any]:
    """The synthetic set in ``data_dir``, written first unless one with these arguments is there."""
    info_path = data_dir / "synth_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        wanted = {"num_images": images, "seed": seed, "format_version": FORMAT_VERSION}
        if all(info.get(key) == value for key, value in wanted.items()):
            print(f"reusing the synthetic set in {data_dir}")
            return info
    return synthesize(str(data_dir), images, seed, image_size=64)


def retrieval_chance(num_images: int, captions_per_image: float, ks: Sequence[int] = (1, 5, 10)) -> float:
    """Expected mean recall@k (image and text retrieval) of random scores."""
    captions = round(num_images * captions_per_image)
    per_image = round(captions_per_image)
    recalls = [min(1.0, k / num_images) for k in ks]
    for k in ks:  # P(at least one of an image's captions among k random ones of all captions)
        miss = math.prod((captions - per_image - i) / (captions - i) for i in range(min(k, captions - per_image)))
        recalls.append(1 - miss)
    return sum(recalls) / len(recalls)


def chance_level(task: Finetune, metrics: dict[str, float]) -> float:
    """The chance level of the task's metric on the split just evaluated."""
    if task.chance:
        return metrics[task.chance]
    return retrieval_chance(int(metrics["num_images"]), metrics["num_texts"] / metrics["num_images"])


def pretrain_table(metrics: dict[str, float]) -> str:
    """Validation accuracy of each pre-training head next to the same model given blank images
    and to its chance level."""
    rows = [("pre-training (validation)", "value", "blank images", "chance")]
    for term, label in (("mlm", "MLM accuracy (masked tokens)"), ("itm", "ITM accuracy"),
                        ("itc", "ITC accuracy (image to text, in batch)")):
        if f"{term}_accuracy" in metrics:
            blank = metrics.get(f"{term}_accuracy_blank")
            rows.append((label, f"{metrics[f'{term}_accuracy']:.3f}", "-" if blank is None else f"{blank:.3f}",
                         f"{metrics[f'{term}_chance']:.3f}"))
    if "mae_loss" in metrics:
        rows.append(("MAE loss (normalised pixels)", f"{metrics['mae_loss']:.3f}", "-", "~1.0"))
    return format_table(rows)


def format_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def plot_results(results: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: from scratch, pre-trained, pre-trained with blank images and chance for every task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.2
    bars = (("scratch", "from scratch"), ("pretrained", "pre-trained"), ("blank", "pre-trained, blank images"),
            ("chance", "chance"))
    for offset, (key, label) in enumerate(bars):
        xs = [i + (offset - 1.5) * width for i in range(len(results))]
        ax.bar(xs, [row[key] for row in results], width, label=label)
    ax.set_xticks(range(len(results)), [f"{row['task']}\n{row['metric']}" for row in results], fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("tiny VLC on the synthetic set: from scratch, pre-trained, blank images, chance", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def command_quickstart(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlkit quickstart", description=__doc__)
    parser.add_argument("--out", default="runs/quickstart", help="folder for data and runs")
    parser.add_argument("--images", type=int, default=600, help="synthetic scenes (default 600)")
    parser.add_argument("--steps", type=int, default=600, help="pre-training steps (default 600)")
    parser.add_argument("--mae-steps", type=int, default=300,
                        help="MAE image pre-training steps before it (default 300; 0: from a random ViT)")
    parser.add_argument("--finetune-scale", type=float, default=1.0,
                        help="multiplies each task's fine-tuning steps (400 VQA, 300 NLVR2, 200 retrieval, 300 SNLI-VE)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    info = load_or_synthesize(out / "data", args.images, args.seed)
    seed = f"seed={args.seed}"
    mae_vit = ""
    if args.mae_steps > 0:
        mae = train_or_test(resolve_config([*mae_arguments(out, info, args.mae_steps), seed]))
        print(f"\nMAE image pre-training: validation loss {mae['val']['mae_loss']:.3f} (normalised pixels)")
        mae_vit = str(mae_checkpoint(out))
    pretrained = train_or_test(resolve_config([*pretrain_arguments(out, info, args.steps, mae_vit), seed]))
    print("\n" + pretrain_table(pretrained["val"] or {}))
    checkpoint = pretrained["last_checkpoint"]

    results = []
    for task in FINETUNES:
        row: dict[str, Any] = {"task": task.label, "metric": task.metric_label}
        for origin, load_path in (("scratch", ""), ("pretrained", checkpoint)):
            words = [*finetune_arguments(out, info, task, args.finetune_scale, load_path), seed]
            metrics = train_or_test(resolve_config(words))["val"]
            row[origin] = metrics[task.metric]
            row[f"{origin}_blank"] = metrics[f"{task.metric}_blank"]
            row["chance"] = chance_level(task, metrics)
        row["blank"] = row.pop("pretrained_blank")
        row["image_gain"] = row["pretrained"] - row["blank"]
        results.append(row)
        print(f"{task.label}: from scratch {row['scratch']:.3f}, pre-trained {row['pretrained']:.3f}, "
              f"blank images {row['blank']:.3f}, chance {row['chance']:.3f}")

    table = [("task", "metric (validation)", "from scratch", "pre-trained", "blank images", "image gain", "chance")]
    table += [(r["task"], r["metric"], f"{r['scratch']:.3f}", f"{r['pretrained']:.3f}", f"{r['blank']:.3f}",
               f"{r['image_gain']:+.3f}", f"{r['chance']:.3f}") for r in results]
    print("\n" + format_table(table))
    plot_results(results, out / PLOT_FILE)
    (out / RESULTS_FILE).write_text(json.dumps({"pretrain": pretrained["val"], "finetune": results}, indent=2) + "\n")
    print(f"\nplot         {out / PLOT_FILE}\nresults      {out / RESULTS_FILE}\nruns         "
          f"{out / 'runs'}\npre-trained  {checkpoint}\ntotal time   {time.perf_counter() - started:.0f} s")
    return 0

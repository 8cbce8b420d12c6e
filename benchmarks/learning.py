"""Does each family learn to look? Tiny pre-training then every downstream task, on the synthetic set.

For each family (VLC, METER, ALBEF/GRIT: the three that train on the Arrow tables) and each seed:
pre-train at tiny size (MLM + ITM + ITC, and MAE for VLC), then fine-tune VQAv2, NLVR2, F30K
retrieval and SNLI-VE from that checkpoint and from scratch, every evaluation with the
image-ablation baseline (``eval_image_ablation``). The table gives, per family and task, mean ±
std over the seeds of the pre-trained metric, the same model's metric with blank images, the
image gain, the from-scratch metric and chance; and per family the pre-training's ITM / ITC
accuracy and their blank-image values. GRIT sampling against random sampling, and ELIP on against
off, are measured by ``benchmarks/grit.py`` and ``benchmarks/elip.py``.

    python benchmarks/learning.py --out benchmarks/results/learning      # 3 seeds, every family
    python benchmarks/learning.py --families vlc --seeds 1 --scale 0.1   # a quick look

Results are written to ``OUT/learning.json`` and printed as a markdown table (docs/results.md).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import torch

from vlkit.cli.synth import data_arguments
from vlkit.cli.training import train_or_test
from vlkit.config import resolve_config
from vlkit.cli.quickstart import FINETUNES, Finetune, chance_level, load_or_synthesize

NO_AUGMENTATION = ("train_transform_keys=[mae_test]", "val_transform_keys=[mae_test]")
"""64-px scenes of coloured shapes lose their answers to random crops and colour operations."""


@dataclass(frozen=True)
class Family:
    """A family's tiny pre-training words, and the words that turn a VLC fine-tuning preset into
    this family's model (``finetune_presets`` replaces a VLC preset by the family's own)."""

    pretrain: tuple[str, ...]
    model: tuple[str, ...]
    finetune_presets: dict[str, str]


VLC = Family(
    pretrain=("task_mlm_itm_mae", "tiny", "loss_names.itc=1", "itm_patch_drop=False", "learning_rate=1e-3"),
    model=("tiny",), finetune_presets={},
)
METER = Family(
    pretrain=("task_mlm_itm_clip_bert", "meter_tiny", "img_prune={}", "loss_names.itc=1", "learning_rate=1e-3",
              *NO_AUGMENTATION),
    model=("meter_tiny", "img_prune={}", *NO_AUGMENTATION),
    finetune_presets={"task_finetune_vqa_mae_randaug": "task_finetune_vqa_clip_bert",
                      "task_finetune_nlvr2_mae_randaug": "task_finetune_nlvr2_clip_bert",
                      "task_finetune_irtr_f30k_mae_randaug": "task_finetune_irtr_f30k_clip_bert",
                      "task_finetune_snli_mae_randaug": "task_finetune_snli_clip_bert"},
)
ALBEF_MODEL = ("model=cross_attention", "fusion_layer=1", "max_position_embeddings=0", "image_size=64",
               "mae_patch_drop=False", "train_transform_keys=[albef_test]", "val_transform_keys=[albef_test]")
ALBEF = Family(
    pretrain=("grit_pretrain", "tiny", *ALBEF_MODEL, "datasets=[coco,vg,sbu,gcc]", "learning_rate=5e-4"),
    model=("tiny", *ALBEF_MODEL), finetune_presets={},
)
FAMILIES = {"vlc": VLC, "meter": METER, "albef": ALBEF}


def pretrain_words(family: Family, data: list[str], out: Path, name: str, steps: int, seed: int) -> list[str]:
    return [*family.pretrain, *data, f"log_dir={out}", f"run_name={name}", f"max_steps={steps}",
            f"val_check_interval={steps}", "warmup_steps=0.1", f"seed={seed}", "eval_image_ablation=True",
            "progress_bar=False"]


def finetune_words(family: Family, task: Finetune, data: list[str], out: Path, name: str, steps: int,
                   seed: int, load_path: str) -> list[str]:
    preset = family.finetune_presets.get(task.preset, task.preset)
    return [preset, *family.model, *data, f"log_dir={out}", f"run_name={name}", f"load_path={load_path}",
            f"max_steps={steps}", f"val_check_interval={steps}", "warmup_steps=0.1", "learning_rate=5e-4",
            "layer_decay=1", f"seed={seed}", "eval_image_ablation=True", "progress_bar=False", *task.overrides]


def run_family(name: str, family: Family, data: list[str], out: Path, steps: int, scale: float,
               seed: int) -> dict[str, Any]:
    """One seed of a family: pre-training figures and every task's pre-trained / blank / scratch / chance."""
    started = time.perf_counter()
    summary = train_or_test(resolve_config(pretrain_words(family, data, out, f"{name}_pretrain_s{seed}", steps, seed)))
    checkpoint, pretrain = summary["last_checkpoint"], summary["val"]
    result: dict[str, Any] = {"pretrain": {k: v for k, v in pretrain.items() if "accuracy" in k or "chance" in k}}
    for task in FINETUNES:
        task_steps = max(1, round(task.steps * scale))
        row = {}
        for origin, load_path in (("scratch", ""), ("pretrained", checkpoint)):
            words = finetune_words(family, task, data, out, f"{name}_{task.preset}_{origin}_s{seed}", task_steps,
                                   seed, load_path)
            metrics = train_or_test(resolve_config(words))["val"]
            row[origin] = metrics[task.metric]
            row[f"{origin}_blank"] = metrics[f"{task.metric}_blank"]
            row["chance"] = chance_level(task, metrics)
        result[task.label] = row
    result["seconds"] = time.perf_counter() - started
    return result


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: per family and task, pre-trained, blank, image gain, scratch and chance over the seeds."""
    lines = ["| family | task | pre-trained | blank images | image gain | from scratch | chance |",
             "|---|---|---|---|---|---|---|"]
    for family, seeds in results.items():
        for term in ("itm", "itc"):
            key = f"{term}_accuracy"
            if key in seeds[0]["pretrain"]:
                lines.append(f"| {family} | pre-training {term.upper()} | {mean_std([s['pretrain'][key] for s in seeds])} | "
                             f"{mean_std([s['pretrain'][key + '_blank'] for s in seeds])} | "
                             f"{mean_std([s['pretrain'][key] - s['pretrain'][key + '_blank'] for s in seeds])} | | "
                             f"{mean_std([s['pretrain'][f'{term}_chance'] for s in seeds])} |")
        for task in FINETUNES:
            rows = [s[task.label] for s in seeds]
            lines.append(f"| {family} | {task.label} ({task.metric_label}) | {mean_std([r['pretrained'] for r in rows])} | "
                         f"{mean_std([r['pretrained_blank'] for r in rows])} | "
                         f"{mean_std([r['pretrained'] - r['pretrained_blank'] for r in rows])} | "
                         f"{mean_std([r['scratch'] for r in rows])} | {mean_std([r['chance'] for r in rows])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/learning")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--steps", type=int, default=600, help="pre-training steps")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every fine-tuning's steps")
    args = parser.parse_args()
    out = Path(args.out)
    info = load_or_synthesize(out / "data", args.images, seed=0)
    data = data_arguments(str(out / "data"), info).split()
    started = time.perf_counter()
    results = {name: [run_family(name, FAMILIES[name], data, out / "runs", args.steps, args.scale, seed)
                      for seed in range(args.seeds)] for name in args.families}
    report = {"date": date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads", "args": vars(args), "seconds": time.perf_counter() - started,
              "results": results}
    (out / "learning.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"\n{report['date']}, {report['machine']}, {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()

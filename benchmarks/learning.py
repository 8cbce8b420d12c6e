"""Does each family learn to look? Tiny pre-training then every downstream task, on the synthetic set.

For each family and seed: pre-train at tiny size, then fine-tune every task the family supports
from that checkpoint and from scratch, every evaluation with the image-ablation baseline
(``eval_image_ablation``):

* VLC, METER (ELIP off), ALBEF/GRIT (and the same model with VLC's random ITM negatives and a plain shuffle): MLM + ITM +
  ITC (and MAE for VLC), then VQAv2, NLVR2, F30K retrieval and SNLI-VE, through the Arrow tables;
* CLIP-ViL: its two pre-training stages and VQA, through its own command line and LXMERT json
  (``benchmarks/clipvil_synthetic.py``).

Three comparisons ride along at equal steps: GRIT-VLP's grouped sampling against a plain shuffle
(ALBEF pre-trained both ways, then the same retrieval fine-tuning: R@1), ELIP on against off
(METER's VQA fine-tuned from the same checkpoint with and without token pruning), and VLC's
pre-training from a random ViT against one from an MAE ViT (``vlc_mae``: steps to ITM 0.7, read
from a validation every 100 steps).

The table gives, per family and task, mean ± std over the seeds of the pre-trained metric, the
same model's metric with blank images, the image gain, the from-scratch metric and chance.
Jobs (a family and a seed) run ``--workers`` at a time, one thread each; each job's result is kept
in ``OUT/jobs/`` so that a second call only runs what is missing.

    python benchmarks/learning.py --out benchmarks/results/learning      # 3 seeds, every family
    python benchmarks/learning.py --families vlc --seeds 1 --scale 0.1   # a quick look

Results are written to ``OUT/learning.json`` and printed as markdown tables (docs/results.md).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vlkit.cli.quickstart import (  # noqa: E402
    FINETUNES, Finetune, chance_level, load_or_synthesize, mae_arguments, mae_checkpoint,
)
from vlkit.cli.synth import data_arguments  # noqa: E402
from vlkit.cli.training import train_or_test  # noqa: E402
from vlkit.config import resolve_config  # noqa: E402
from vlkit.engine.logging import read_metrics  # noqa: E402

NO_AUGMENTATION = ("train_transform_keys=[mae_test]", "val_transform_keys=[mae_test]", "cache_images=True")
"""64-px scenes of coloured shapes lose their answers to random crops and colour operations; with a
fixed transform every image is decoded once (``cache_images``)."""


@dataclass(frozen=True)
class Family:
    """A family's tiny pre-training words, and the words that turn a VLC fine-tuning preset into
    this family's model (``finetune_presets`` replaces a VLC preset by the family's own)."""

    pretrain: tuple[str, ...]
    model: tuple[str, ...]
    finetune_presets: dict[str, str]


VLC = Family(
    pretrain=("task_mlm_itm_mae", "tiny", "loss_names.itc=1", "itm_patch_drop=False", "learning_rate=1e-3",
              *NO_AUGMENTATION),
    model=("tiny", *NO_AUGMENTATION), finetune_presets={},
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
               "mae_patch_drop=False", "train_transform_keys=[albef_test]", "val_transform_keys=[albef_test]",
               "cache_images=True")
ALBEF = Family(
    pretrain=("grit_pretrain", "tiny", *ALBEF_MODEL, "datasets=[coco,vg,sbu,gcc]", "learning_rate=1e-3"),
    model=("tiny", *ALBEF_MODEL), finetune_presets={},
)
ALBEF_PLAIN = Family(pretrain=(*ALBEF.pretrain, "itm_negatives=random", "draw_false_image=1", "train_sampler=random"),
                     model=ALBEF.model, finetune_presets={})
"""The ALBEF/GRIT model with VLC's ITM pairs (a random other image) and a plain shuffle instead of
GRIT's hardest in-batch negatives and grouped batches: at tiny size only this one grounds its ITM
head (docs/results.md section 6)."""
FAMILIES = {"vlc": VLC, "meter": METER, "albef": ALBEF, "albef_plain": ALBEF_PLAIN, "clipvil": None}
COMPARISON_JOBS = {"albef_shuffled": "albef", "vlc_mae": "vlc"}
"""Jobs that only feed a comparison, and the family they come with."""
RETRIEVAL = next(task for task in FINETUNES if task.metric == "r_mean")
VQA = next(task for task in FINETUNES if task.metric == "vqa_accuracy")
ELIP_ON = ("img_prune.begin_layer=[1,2]", "img_prune.num_act_layers=[1,1]", "img_prune.keep_ratio=[0.7,0.5]")
"""``meter_tiny``'s own ELIP stages (prune 30 % of the image tokens after block 1, then half of the rest)."""


CURVE_INTERVAL = 100
"""Pre-training validates every this many steps: the ITM curve that ``steps_to_itm`` reads."""
ITM_TARGET = 0.7


def pretrain_words(family: Family, data: list[str], out: Path, name: str, steps: int, seed: int) -> list[str]:
    return [*family.pretrain, *data, f"log_dir={out}", f"run_name={name}", f"max_steps={steps}",
            f"val_check_interval={min(steps, CURVE_INTERVAL)}", "warmup_steps=0.1", f"seed={seed}",
            "eval_image_ablation=True", "progress_bar=False"]


def finetune_words(family: Family, task: Finetune, data: list[str], out: Path, name: str, steps: int,
                   seed: int, load_path: str) -> list[str]:
    preset = family.finetune_presets.get(task.preset, task.preset)
    return [preset, *family.model, *data, f"log_dir={out}", f"run_name={name}", f"load_path={load_path}",
            f"max_steps={steps}", f"val_check_interval={steps}", "warmup_steps=0.1", "learning_rate=5e-4",
            "layer_decay=1", f"seed={seed}", "eval_image_ablation=True", "progress_bar=False", *task.overrides]


def finetune(family: Family, task: Finetune, data: list[str], out: Path, name: str, scale: float, seed: int,
             load_path: str, *extra: str) -> dict[str, float]:
    """Validation metrics of one fine-tuning run."""
    steps = max(1, round(task.steps * scale))
    words = finetune_words(family, task, data, out, name, steps, seed, load_path)
    return train_or_test(resolve_config([*words, *extra]))["val"]


def pretrain(family: Family, data: list[str], out: Path, name: str, steps: int, seed: int,
             *extra: str) -> tuple[str, dict[str, float]]:
    """The last checkpoint and final validation metrics of one pre-training run, plus
    ``steps_to_itm`` (the first validation step with ITM accuracy >= ``ITM_TARGET``)."""
    summary = train_or_test(resolve_config([*pretrain_words(family, data, out, name, steps, seed), *extra]))
    return summary["last_checkpoint"], {**summary["val"], "steps_to_itm": steps_to_itm(Path(summary["run_dir"]))}


def steps_to_itm(run_dir: Path) -> float:
    """The first validation step of a run whose ITM accuracy reached ``ITM_TARGET`` (inf: never)."""
    for record in read_metrics(run_dir / "metrics.jsonl"):
        if record.get("event") == "val" and record.get("val/itm_accuracy", 0.0) >= ITM_TARGET:
            return record["step"]
    return math.inf


def pretrain_figures(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if "accuracy" in k or "chance" in k or k == "steps_to_itm"}


def task_row(task: Finetune, scratch: dict[str, float], pretrained: dict[str, float]) -> dict[str, float]:
    return {"scratch": scratch[task.metric], "scratch_blank": scratch[f"{task.metric}_blank"],
            "pretrained": pretrained[task.metric], "pretrained_blank": pretrained[f"{task.metric}_blank"],
            "chance": chance_level(task, pretrained)}


def recall_at_1(metrics: dict[str, float]) -> float:
    """Mean of image and text retrieval recall@1."""
    return (metrics["ir_r1"] + metrics["tr_r1"]) / 2


def run_family(name: str, data: list[str], out: Path, steps: int, scale: float, seed: int) -> dict[str, Any]:
    """One seed of an Arrow-table family: pre-training figures and every task's pre-trained /
    blank / scratch / chance, plus METER's ELIP-on VQA and ALBEF's retrieval R@1."""
    family = FAMILIES[name]
    checkpoint, metrics = pretrain(family, data, out, f"{name}_pretrain_s{seed}", steps, seed)
    result: dict[str, Any] = {"pretrain": pretrain_figures(metrics)}
    for task in FINETUNES:
        runs = {origin: finetune(family, task, data, out, f"{name}_{task.preset}_{origin}_s{seed}", scale, seed,
                                 load_path)
                for origin, load_path in (("scratch", ""), ("pretrained", checkpoint))}
        result[task.label] = task_row(task, runs["scratch"], runs["pretrained"])
        if task is RETRIEVAL:
            result["retrieval_r1"] = recall_at_1(runs["pretrained"])
        if task is VQA and name == "meter":
            elip = finetune(family, task, data, out, f"meter_vqa_elip_s{seed}", scale, seed, checkpoint, *ELIP_ON)
            result["elip_vqa"] = {"off": runs["pretrained"][task.metric], "on": elip[task.metric]}
    return result


def run_random_sampling(data: list[str], out: Path, steps: int, scale: float, seed: int) -> dict[str, Any]:
    """ALBEF pre-trained with a plain shuffle instead of GRIT's grouped batches, then the same
    retrieval fine-tuning: its R@1."""
    checkpoint, _ = pretrain(ALBEF, data, out, f"albef_shuffled_pretrain_s{seed}", steps, seed, "train_sampler=random")
    metrics = finetune(ALBEF, RETRIEVAL, data, out, f"albef_shuffled_retrieval_s{seed}", scale, seed, checkpoint)
    return {"retrieval_r1": recall_at_1(metrics)}


def run_vlc_from_mae(info: dict[str, Any], data: list[str], out: Path, steps: int, seed: int) -> dict[str, Any]:
    """VLC's whole recipe: the quickstart's MAE image pre-training (half the steps), then the VLC
    family's pre-training from that ViT (``pretrain_path``): its figures and steps to ITM 0.7."""
    name = f"vlc_mae_s{seed}"
    train_or_test(resolve_config([*mae_arguments(out, info, steps // 2, name), f"seed={seed}", "progress_bar=False"]))
    _, metrics = pretrain(VLC, data, out / "runs", f"vlc_from_mae_pretrain_s{seed}", steps, seed,
                          f"pretrain_path={mae_checkpoint(out, name)}")
    return {"pretrain": pretrain_figures(metrics)}


def run_clipvil(info: dict[str, Any], out: Path, scale: float, seed: int) -> dict[str, Any]:
    from clipvil_synthetic import run_seed

    return run_seed(info, str(out / f"clipvil_s{seed}"), seed, scale)


def run_job(job: str, seed: int, info: dict[str, Any], out: Path, steps: int, scale: float) -> dict[str, Any]:
    """One job in a worker process of one thread: a family (or a comparison job) at one seed."""
    torch.set_num_threads(1)
    started, cpu_started = time.perf_counter(), time.process_time()
    data = data_arguments(str(out / "data"), info).split()
    runs = out / "runs"
    if job == "clipvil":
        result = run_clipvil(info, runs, scale, seed)
    elif job == "albef_shuffled":
        result = run_random_sampling(data, runs, steps, scale, seed)
    elif job == "vlc_mae":
        result = run_vlc_from_mae(info, data, out, steps, seed)
    else:
        result = run_family(job, data, runs, steps, scale, seed)
    result["seconds"] = time.perf_counter() - started
    result["cpu_seconds"] = time.process_time() - cpu_started  # the job's time on an idle core
    return result


def mean_std(values: list[float]) -> str:
    """``mean ± std`` of the finite values, and how many were infinite ("never" reached)."""
    finite = [value for value in values if math.isfinite(value)]
    never = f" ({len(values) - len(finite)} never)" if len(finite) < len(values) else ""
    if not finite:
        return "never"
    spread = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.mean(finite):.3f} ± {spread:.3f}{never}"


def family_rows(family: str, seeds: list[dict[str, Any]]) -> list[str]:
    lines = []
    for term in ("itm", "itc"):
        key = f"{term}_accuracy"
        if key in seeds[0]["pretrain"]:
            lines.append(f"| {family} | pre-training {term.upper()} | {mean_std([s['pretrain'][key] for s in seeds])} | "
                         f"{mean_std([s['pretrain'][key + '_blank'] for s in seeds])} | "
                         f"{mean_std([s['pretrain'][key] - s['pretrain'][key + '_blank'] for s in seeds])} | | "
                         f"{mean_std([s['pretrain'][f'{term}_chance'] for s in seeds])} |")
    for task in FINETUNES:
        if task.label not in seeds[0]:
            continue
        rows = [s[task.label] for s in seeds]
        lines.append(f"| {family} | {task.label} ({task.metric_label}) | {mean_std([r['pretrained'] for r in rows])} | "
                     f"{mean_std([r['pretrained_blank'] for r in rows])} | "
                     f"{mean_std([r['pretrained'] - r['pretrained_blank'] for r in rows])} | "
                     f"{mean_std([r['scratch'] for r in rows])} | {mean_std([r['chance'] for r in rows])} |")
    return lines


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: per family and task, pre-trained, blank, image gain, scratch and chance over the
    seeds; then GRIT against random sampling and ELIP on against off."""
    lines = ["| family | task | pre-trained | blank images | image gain | from scratch | chance |",
             "|---|---|---|---|---|---|---|"]
    for family, seeds in results.items():
        if family not in COMPARISON_JOBS:
            lines += family_rows(family, seeds)
    comparisons = []
    if "vlc" in results and "vlc_mae" in results:
        comparisons.append((f"VLC pre-training steps to ITM {ITM_TARGET} (validation every {CURVE_INTERVAL})",
                            "random ViT", [s["pretrain"]["steps_to_itm"] for s in results["vlc"]],
                            "MAE ViT", [s["pretrain"]["steps_to_itm"] for s in results["vlc_mae"]]))
        comparisons.append(("VLC pre-training ITM accuracy", "random ViT",
                            [s["pretrain"]["itm_accuracy"] for s in results["vlc"]],
                            "MAE ViT", [s["pretrain"]["itm_accuracy"] for s in results["vlc_mae"]]))
    if "albef" in results and "albef_shuffled" in results:
        grit = [s["retrieval_r1"] for s in results["albef"]]
        shuffled = [s["retrieval_r1"] for s in results["albef_shuffled"]]
        comparisons.append(("ALBEF retrieval R@1 (mean of IR, TR) after equal steps", "GRIT sampling", grit,
                            "random sampling", shuffled))
    if "meter" in results:
        comparisons.append(("METER VQA accuracy", "ELIP off", [s["elip_vqa"]["off"] for s in results["meter"]],
                            "ELIP on (keep 0.7, 0.5)", [s["elip_vqa"]["on"] for s in results["meter"]]))
    if comparisons:
        lines += ["", "| comparison | A | A | B | B | B - A |", "|---|---|---|---|---|---|"]
        for label, name_a, a, name_b, b in comparisons:
            lines.append(f"| {label} | {name_a} | {mean_std(a)} | {name_b} | {mean_std(b)} | "
                         f"{mean_std([y - x for x, y in zip(a, b)])} |")
    return "\n".join(lines)


def jobs_of(families: list[str], seeds: int) -> list[tuple[str, int]]:
    """Every (job, seed), the slowest families first so that the pool ends evenly."""
    names = [name for name in ("meter", "albef", "albef_plain", "vlc", "clipvil") if name in families]
    names += [job for job, family in COMPARISON_JOBS.items() if family in families]
    return [(name, seed) for name in names for seed in range(seeds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/learning")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--steps", type=int, default=600, help="pre-training steps")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every fine-tuning's steps")
    parser.add_argument("--workers", type=int, default=2, help="jobs at a time, one thread each")
    args = parser.parse_args()
    out = Path(args.out)
    info = load_or_synthesize(out / "data", args.images, seed=0)
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    pending = {}
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for job, seed in jobs_of(args.families, args.seeds):
            done = out / "jobs" / f"{job}_s{seed}.json"
            if done.is_file():
                results.setdefault(job, []).append(json.loads(done.read_text()))
            else:
                pending[(job, seed)] = pool.submit(run_job, job, seed, info, out, args.steps, args.scale)
        for (job, seed), future in pending.items():
            result = future.result()
            (out / "jobs" / f"{job}_s{seed}.json").write_text(json.dumps(result, indent=2) + "\n")
            results.setdefault(job, []).append(result)
            print(f"done: {job} seed {seed} ({result['seconds']:.0f} s, {result['cpu_seconds']:.0f} s of CPU)", flush=True)
    report = {"date": date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{args.workers} workers of 1 thread", "args": vars(args), "seconds": time.perf_counter() - started,
              "results": results}
    (out / "learning.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"\n{report['date']}, {report['machine']}, {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()

"""ELIP token pruning: vision tokens per block, training-step and inference time, peak memory, and
the accuracy cost on the synthetic benchmark.

``speed`` measures, with pruning off, ``lookahead`` (ELIP's scorer) and ``cls_attention`` (the
cheap scorer), at ELIP's default keep ratios and an aggressive setting:

* ``b16_288`` / ``b16_384``: METER's vision trunk, CLIP ViT-B/16 with the last block dropped (11
  open_clip ``ResidualAttentionBlock``s, width 768, 12 heads) at 288 and 384 px, batch 2 of random
  tokens: a training step is forward + backward of the trunk, inference a no-grad forward;
  stages ``elip_meter`` ([2, 4, 9] / [2, 5, 2]; keep 0.9/0.7/0.45, aggressive 0.7/0.45/0.25);
* ``tiny``: the whole ``tiny`` VLC model (2 blocks, 64 px, 16 patches), a pre-training step
  (MLM + ITM, batch 32) on a random batch and an ``infer`` pass; stage [1], keep 0.5 (aggressive 0.25).

Times are medians over ``--rounds`` rounds in which the modes take turns (so a shared machine's
load falls on all alike). Memory is measured per setting in a process of its own, after a warm-up
step: the activations autograd saves for backward in one step, and how far memory rises during a
training step and during an inference pass (resident memory sampled every ms on CPU, allocated
memory on CUDA).

``accuracy`` runs the same short tiny schedule with and without ELIP (pre-training MLM + ITM + ITC
without MAE, then VQAv2 and F30K retrieval fine-tuning from it, pruning in every phase) on the
synthetic set and reports the VQA score and retrieval R@1 side by side.

    python benchmarks/elip.py speed [--models tiny,b16_288,b16_384] [--rounds 3] [--json out.json]
    python benchmarks/elip.py accuracy [--out runs/elip_accuracy] [--pretrain-steps 300]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

MODES = {
    "off": None,
    "lookahead": ("lookahead", "default"),
    "cls_attention": ("cls_attention", "default"),
    "lookahead_aggressive": ("lookahead", "aggressive"),
    "cls_attention_aggressive": ("cls_attention", "aggressive"),
}
B16 = {"width": 768, "heads": 12, "depth": 11, "patch": 16, "begin_layer": (2, 4, 9), "num_act_layers": (2, 5, 2),
       "keep_ratio": {"default": (0.9, 0.7, 0.45), "aggressive": (0.7, 0.45, 0.25)}}
TINY_STAGES = {"begin_layer": [1], "num_act_layers": [1], "keep_ratio": {"default": [0.5], "aggressive": [0.25]}}
MODELS = ("tiny", "b16_288", "b16_384")
TINY_WORDS = ["task_mlm_itm_mae", "tiny", "loss_names.mae=0", "use_mae=False", "mae_patch_drop=False",
              "itm_patch_drop=False", "max_text_len=40", "vocab_size=1000", "precision=32"]
"""``tiny`` pre-training without MAE (which does not compose with pruning), with a 1000-word
vocabulary so that the MLM head does not hide the vision tower (the synthetic set has 173 words)."""
ACCURACY_BASE = ["tiny", "loss_names.mae=0", "use_mae=False", "mae_patch_drop=False", "itm_patch_drop=False",
                 "warmup_steps=0.1", "train_transform_keys=[mae_test]", "progress_bar=False"]


def resident_mib() -> float:
    """Current resident memory of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rise_mib(function: Callable[[], None], device: torch.device) -> float:
    """How far memory rises above its level before ``function`` while it runs: peak allocated
    CUDA memory, or on CPU the resident memory sampled every millisecond by a thread."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        function()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base, peak, running = resident_mib(), [0.0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], resident_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        function()
    finally:
        running[0] = False
        sampler.join()
    return max(peak[0], resident_mib()) - base


def block_flops(tokens: int, width: int) -> float:
    """Forward FLOPs of one pre-LN ViT block on ``tokens`` tokens (24·N·d² + 4·N²·d)."""
    return 24 * tokens * width**2 + 4 * tokens**2 * width


def vit_forward_flops(tokens_per_block: list[int], width: int, stages: list[tuple[int, int]], scoring: str | None) -> float:
    """The real path plus the scoring work: ``lookahead`` runs L - 1 full blocks and one query row
    (its keys: 2·N·d²) per stage; ``cls_attention`` one query row per stage. ``stages``: (block, L)."""
    total = sum(block_flops(n, width) for n in tokens_per_block)
    if scoring is None:
        return total
    for block, depth in stages:
        full = tokens_per_block[block - 1] if block > 0 else tokens_per_block[0]
        if scoring == "lookahead":
            total += (depth - 1) * block_flops(full, width)
        total += 2 * full * width**2 + 4 * full * width
    return total


@dataclass
class Setting:
    """One model with one ELIP mode: its training step, inference pass and token counts."""

    train_step: Callable[[], torch.Tensor]
    """Forward and loss (the caller runs backward)."""
    infer: Callable[[], None]
    tokens_per_block: Callable[[], list[int]]
    width: int
    stages: list[tuple[int, int]]
    scoring: str | None
    parameters: list[torch.Tensor]


def b16_settings(size: int, modes: list[str], device: torch.device) -> dict[str, Setting]:
    """METER's CLIP ViT-B/16 trunk (shared weights) under each mode."""
    from open_clip.transformer import ResidualAttentionBlock
    from torch import nn

    from vlkit.models.token_reduction import PruneSchedule, TokenPruner

    torch.manual_seed(0)
    blocks = nn.ModuleList(ResidualAttentionBlock(B16["width"], B16["heads"]) for _ in range(B16["depth"])).to(device)
    patches = (size // B16["patch"]) ** 2
    tokens = torch.randn(2, 1 + patches, B16["width"], device=device)
    text = torch.randn(2, B16["width"], device=device)
    stages = list(zip(B16["begin_layer"], B16["num_act_layers"]))

    def setting(mode: str) -> Setting:
        pruner = None
        if MODES[mode] is not None:
            scoring, ratios = MODES[mode]
            schedule = PruneSchedule(B16["begin_layer"], B16["keep_ratio"][ratios], B16["num_act_layers"], scoring=scoring)
            pruner = TokenPruner(schedule, blocks, patches)

        def forward(training: bool) -> torch.Tensor:
            blocks.train(training)
            if pruner is None:
                x = tokens
                for block in blocks:
                    x = block(x)
                return x
            return pruner.train(training)(blocks, tokens, text_cls=text)[0]

        def infer() -> None:
            with torch.no_grad():
                forward(False)

        def counts() -> list[int]:
            return pruner.last_trace.tokens_per_block if pruner is not None else [1 + patches] * B16["depth"]

        return Setting(lambda: forward(True).float().pow(2).mean(), infer, counts, B16["width"], stages,
                       MODES[mode] and MODES[mode][0], list(blocks.parameters()))

    return {mode: setting(mode) for mode in modes}


def tiny_settings(modes: list[str], device: torch.device) -> dict[str, Setting]:
    """The whole ``tiny`` VLC model (MLM + ITM pre-training step) under each mode."""
    from benchmarks.train_step import random_batch
    from vlkit.config import resolve_config
    from vlkit.models.token_reduction import token_pruners
    from vlkit.tasks.pretrain import PretrainTask

    stages = list(zip(TINY_STAGES["begin_layer"], TINY_STAGES["num_act_layers"]))

    def setting(mode: str) -> Setting:
        words = [*TINY_WORDS]
        if MODES[mode] is not None:
            scoring, ratios = MODES[mode]
            words += [f"img_prune.begin_layer={TINY_STAGES['begin_layer']}",
                      f"img_prune.num_act_layers={TINY_STAGES['num_act_layers']}",
                      f"img_prune.keep_ratio={TINY_STAGES['keep_ratio'][ratios]}", f"img_prune_scoring={scoring}"]
        cfg = resolve_config(words)
        torch.manual_seed(0)
        task = PretrainTask(cfg)
        model = task.build_model().to(device)
        batch = random_batch(cfg, 32, device)
        pruners = token_pruners(model)

        def train_step() -> torch.Tensor:
            return task.training_step(model.train(), batch)["loss"]

        def infer() -> None:
            with torch.no_grad():
                model.eval().infer(batch["text_ids"], batch["text_masks"], batch["image"])

        def counts() -> list[int]:
            return pruners[0].last_trace.tokens_per_block if pruners else [17] * cfg.num_layers

        return Setting(train_step, infer, counts, cfg.hidden_size, stages, MODES[mode] and MODES[mode][0],
                       list(model.parameters()))

    return {mode: setting(mode) for mode in modes}


def build_settings(model: str, modes: list[str], device: torch.device) -> dict[str, Setting]:
    if model == "tiny":
        return tiny_settings(modes, device)
    return b16_settings(int(model.split("_")[1]), modes, device)


def saved_activation_mib(setting: Setting) -> float:
    """Tensors autograd keeps for backward in one training step (parameters excluded), in MiB."""
    params = {p.untyped_storage().data_ptr() for p in setting.parameters}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = setting.train_step()
    loss.backward()
    return sum(storages.values()) / 2**20


def time_modes(settings: dict[str, Setting], rounds: int, device: torch.device) -> dict[str, dict[str, float]]:
    """Median training-step and inference times (ms) per mode; the modes interleave round by round
    so that a shared machine's load falls on all of them alike."""

    def once(function: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - started) * 1000

    def train(setting: Setting) -> Callable[[], None]:
        def step() -> None:
            setting.train_step().backward()
            for parameter in setting.parameters:
                parameter.grad = None
        return step

    times: dict[str, dict[str, list[float]]] = {mode: {"train": [], "infer": []} for mode in settings}
    for mode, setting in settings.items():  # warm-up
        train(setting)()
        setting.infer()
    for _ in range(rounds):
        for mode, setting in settings.items():
            times[mode]["train"].append(once(train(setting)))
            times[mode]["infer"].append(once(setting.infer))
    return {mode: {kind: statistics.median(values) for kind, values in kinds.items()} for mode, kinds in times.items()}


def memory_of(model: str, mode: str, device_name: str) -> dict:
    """Run in a process of its own (after one warm-up step): the activations saved for backward
    in one training step, and the peak memory rise of a training step and of an inference pass."""
    device = torch.device(device_name)
    setting = build_settings(model, [mode], device)[mode]
    saved = saved_activation_mib(setting)  # also the warm-up

    def train() -> None:
        setting.train_step().backward()
        for parameter in setting.parameters:
            parameter.grad = None

    return {"saved_activations_mib": round(saved, 1), "train_peak_rise_mib": round(peak_rise_mib(train, device), 1),
            "infer_peak_rise_mib": round(peak_rise_mib(setting.infer, device), 1)}


def run_speed(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    for model in args.models.split(","):
        settings = build_settings(model, list(MODES), device)
        times = time_modes(settings, args.rounds, device)
        for mode, setting in settings.items():
            command = [sys.executable, __file__, "memory", model, mode, args.device]
            done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent.parent,
                                  env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})  # frees reach the OS
            if done.returncode:
                raise RuntimeError(f"{model} {mode} failed:\n{done.stderr[-3000:]}")
            counts = setting.tokens_per_block()
            rows.append({
                "model": model, "mode": mode, "device": args.device, "tokens_per_block": counts,
                "train_ms": round(times[mode]["train"], 1), "infer_ms": round(times[mode]["infer"], 1),
                **json.loads(done.stdout.strip().splitlines()[-1]),
                "vit_forward_gflops": round(vit_forward_flops(counts, setting.width, setting.stages, setting.scoring) / 1e9, 3),
            })
            print(json.dumps(rows[-1]), flush=True)
        del settings
    print(speed_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    return rows


def speed_table(rows: list[dict]) -> str:
    off = {row["model"]: row for row in rows if row["mode"] == "off"}
    lines = ["| model | ELIP | vision tokens entering each block | train step (ms) | inference (ms) | "
             "saved activations (MiB) | train peak rise (MiB) | inference peak rise (MiB) | "
             "ViT forward GFLOPs (model) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        base = off.get(row["model"])
        rel = (lambda key: f" ({row[key] / base[key]:.2f}x)" if base and base[key] else "")
        counts = compact(row["tokens_per_block"])
        lines.append(f"| {row['model']} | {row['mode']} | {counts} | {row['train_ms']:.0f}{rel('train_ms')} | "
                     f"{row['infer_ms']:.0f}{rel('infer_ms')} | {row['saved_activations_mib']:.1f}"
                     f"{rel('saved_activations_mib')} | {row['train_peak_rise_mib']:.0f}{rel('train_peak_rise_mib')} | "
                     f"{row['infer_peak_rise_mib']:.0f}{rel('infer_peak_rise_mib')} | "
                     f"{row['vit_forward_gflops']:.3g}{rel('vit_forward_gflops')} |")
    return "\n".join(lines)


def compact(counts: list[int]) -> str:
    """[257, 257, 232] as "257×2, 232"."""
    parts, index = [], 0
    while index < len(counts):
        run = 1
        while index + run < len(counts) and counts[index + run] == counts[index]:
            run += 1
        parts.append(f"{counts[index]}×{run}" if run > 1 else str(counts[index]))
        index += run
    return ", ".join(parts)


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {gpu}, torch {torch.__version__}"


# ----- accuracy cost ------------------------------------------------------------------------------


def run_accuracy(args: argparse.Namespace) -> dict:
    """Pre-train, then fine-tune VQAv2 and F30K retrieval from it, with each ELIP setting."""
    from vlkit.cli.synth import data_arguments
    from vlkit.cli.training import train_or_test
    from vlkit.config import resolve_config
    from vlkit.cli.quickstart import load_or_synthesize

    out = Path(args.out)
    info = load_or_synthesize(out / "data", args.images, 0)
    data = data_arguments(str(out / "data"), info).split()
    settings = {"off": [], "lookahead": ["elip_tiny"], "cls_attention": ["elip_tiny", "elip_cheap"]}
    results = {}
    for name, elip in settings.items():
        started = time.perf_counter()
        common = [*ACCURACY_BASE, *data, f"log_dir={out / 'runs'}", *elip]
        pre = train_or_test(resolve_config([
            "task_mlm_itm_mae", *common, "loss_names.itc=1", f"run_name=pretrain_{name}", "learning_rate=1e-3",
            f"max_steps={args.pretrain_steps}", f"val_check_interval={args.pretrain_steps}"]))
        ckpt = pre["last_checkpoint"]
        vqa = train_or_test(resolve_config([
            "task_finetune_vqa_mae_randaug", *common, f"run_name=vqa_{name}", f"load_path={ckpt}",
            "learning_rate=5e-4", f"max_steps={args.vqa_steps}", f"val_check_interval={args.vqa_steps}"]))["val"]
        irtr = train_or_test(resolve_config([
            "task_finetune_irtr_f30k_mae_randaug", *common, f"run_name=irtr_{name}", f"load_path={ckpt}",
            "learning_rate=5e-4", "draw_false_text=3", f"max_steps={args.irtr_steps}",
            f"val_check_interval={args.irtr_steps}"]))["val"]
        results[name] = {"pretrain_itm_accuracy": pre["val"].get("itm_accuracy"), "vqa_score": vqa["score"],
                         "ir_r1": irtr["ir_r1"], "tr_r1": irtr["tr_r1"], "wall_s": round(time.perf_counter() - started)}
        print(name, results[name], flush=True)
    lines = ["| ELIP | pre-training ITM acc. | VQA score | IR R@1 | TR R@1 | wall (s) |", "|---|---|---|---|---|---|"]
    for name, row in results.items():
        lines.append(f"| {name} | {row['pretrain_itm_accuracy']:.3f} | {row['vqa_score']:.3f} | {row['ir_r1']:.3f} | "
                     f"{row['tr_r1']:.3f} | {row['wall_s']} |")
    print("\n".join(lines))
    (out / "elip_accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str]) -> None:
    if argv and argv[0] == "memory":
        print(json.dumps(memory_of(*argv[1:4])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("speed")
    speed.add_argument("--models", default=",".join(MODELS))
    speed.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    speed.add_argument("--rounds", type=int, default=3, help="timed rounds over all modes (median)")
    speed.add_argument("--json", default="")
    accuracy = commands.add_parser("accuracy")
    accuracy.add_argument("--out", default="runs/elip_accuracy")
    accuracy.add_argument("--images", type=int, default=600)
    accuracy.add_argument("--pretrain-steps", type=int, default=300)
    accuracy.add_argument("--vqa-steps", type=int, default=300)
    accuracy.add_argument("--irtr-steps", type=int, default=200)
    args = parser.parse_args(argv)
    run_speed(args) if args.command == "speed" else run_accuracy(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main(sys.argv[1:])

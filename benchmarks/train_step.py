"""Training-step throughput, FLOPs, MFU and memory of every family, in every performance mode.

Each family runs its pre-training task at its published size (``base``) or CPU size (``tiny``):

* ``vlc``: VLC-B/16 at 384 px, 40 text tokens, MLM + ITM + WPA + MAE with its decoder;
* ``meter``, ``elip``, ``elip_cheap``: METER CLIP-B/16 + RoBERTa-base at 288 px (MLM + ITM), plain,
  with ELIP's look-ahead pruning, and with ELIP's cheap CLS-attention scoring;
* ``albef``: ALBEF/GRIT ViT-B/16 + BERT-base at 256 px, ITC + ITM + MLM with the momentum model and
  its queue;
* ``clipvil``: CLIP-ViL RN50 on 384x640 canvases, 100 sub-sampled grid cells, MLM + ITM.

Modes: ``fp32`` (eager), ``bf16`` (eager, autocast), ``bf16_compile`` (each block compiled) and
``bf16_compile_ac`` (compiled + activation checkpointing of every block); on request also
``fp32_ac``, ``bf16_ac`` and ``fp32_compile``. Batches are real ones:
the task's dataset, transforms and collator over a small synthetic set (images resized to the
family's size), repeated to the batch size; weights are random (FLOPs and speed do not depend on
them). Every setting runs in its own process, so the peak memory is its own. "step MiB" is the
peak minus the memory held between steps (weights, optimizer state): what a step's activations
and gradients add, the part activation checkpointing reduces.

    python benchmarks/train_step.py --sizes tiny                      # CPU, a few minutes
    python benchmarks/train_step.py --sizes base --families vlc --modes fp32,bf16_compile
    python benchmarks/train_step.py --sizes base --batch-search 120   # + the largest batch that fits
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METER_BASE = ["task_mlm_itm_clip_bert", "clip16", "text_roberta", "image_size=288", "backbone_init=random",
              "vocab_size=50265", "datasets=[coco]"]
METER_TINY = ["task_mlm_itm_clip_bert", "clip16", "meter_tiny", "img_prune={}", "datasets=[coco]"]
ALBEF_TINY = ["model=cross_attention", "fusion_layer=1", "max_position_embeddings=0", "image_size=64",
              "itc_queue_size=256"]
FAMILIES = {
    "vlc": {"base": ["task_mlm_itm_mae", "image_size=384", "max_text_len=40", "datasets=[coco]"],
            "tiny": ["task_mlm_itm_mae", "tiny", "max_text_len=40", "datasets=[coco]"]},
    "meter": {"base": METER_BASE, "tiny": METER_TINY},
    "elip": {"base": [*METER_BASE, "elip_meter", "img_prune_phases=[pretrain,finetune,eval]"],
             "tiny": [*METER_TINY, "elip_tiny"]},
    "elip_cheap": {"base": [*METER_BASE, "elip_meter", "elip_cheap", "img_prune_phases=[pretrain,finetune,eval]"],
                   "tiny": [*METER_TINY, "elip_tiny", "elip_cheap"]},
    "albef": {"base": ["albef_pretrain", "datasets=[coco]"],
              "tiny": ["albef_pretrain", "tiny", *ALBEF_TINY, "datasets=[coco]"]},
    "clipvil": {"base": ["clipvil_pretrain", "clip_model_name=RN50", "aspect_ratio_group_factor=-1"],
                "tiny": ["clipvil_pretrain", "clipvil_tiny", "aspect_ratio_group_factor=-1"]},
}
MODES = {  # precision, compile, activation checkpointing
    "fp32": (32, False, False),
    "bf16": ("bf16", False, False),
    "bf16_compile": ("bf16", True, False),
    "bf16_compile_ac": ("bf16", True, True),
}
EXTRA_MODES = {"fp32_ac": (32, False, True), "bf16_ac": ("bf16", False, True), "fp32_compile": (32, True, False)}
"""Modes not run by default: checkpointing and compilation on their own (the CPU comparisons)."""
CPU_MODES = ("fp32", "fp32_compile", "fp32_ac")
SEARCH_MODES = ("bf16", "bf16_ac")
"""The batch search runs eagerly (a compiled step would recompile for every batch size tried)."""
DEFAULT_BATCH = {("base", "cpu"): 4, ("base", "cuda"): 32, ("tiny", "cpu"): 16, ("tiny", "cuda"): 128}


# ----- data ---------------------------------------------------------------------------------------


def prepare_data(root: Path) -> dict:
    """A small synthetic set under ``root`` (made once) and tokenizers padded to BERT's and
    RoBERTa's vocabulary sizes, so that the MLM heads have their published width."""
    from vlkit.data.synthetic import write_synthetic

    info_file = root / "bench_info.json"
    if info_file.is_file():
        return json.loads(info_file.read_text())
    info = write_synthetic(str(root / "synthetic"), num_images=40, seed=0, image_size=64)
    tokenizers = {size: pad_tokenizer(info["tokenizer"], size, root / f"tokenizer_{size}") for size in (30522, 50265)}
    bench = {"arrow": str(root / "synthetic"), "clipvil": info["clipvil"]["root"], "tokenizers": tokenizers}
    info_file.write_text(json.dumps(bench))
    return bench


def pad_tokenizer(source: str, size: int, out: Path) -> str:
    """A copy of the WordPiece tokenizer in ``source`` with unused tokens added up to ``size``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.add_tokens([f"[unused{i}]" for i in range(size - len(tokenizer))])
    tokenizer.save_pretrained(str(out))
    return str(out)


def config_words(family: str, size: str, data: dict) -> list[str]:
    vocab = 50265 if family in ("meter", "elip", "elip_cheap") and size == "base" else 30522
    if size == "tiny":
        vocab = 30522
    root = data["clipvil"] if family == "clipvil" else data["arrow"]
    return [*FAMILIES[family][size], f"data_root={root}", f"tokenizer={data['tokenizers'][str(vocab)]}",
            f"vocab_size={vocab}", "num_workers=0", "progress_bar=False"]


def repeat_batch(batch: dict, size: int) -> dict:
    """``batch`` repeated along its first dimension to ``size`` rows."""
    rows = len(batch["text_ids"])
    picks = torch.arange(size) % rows

    def take(value):
        if torch.is_tensor(value) and value.ndim and value.shape[0] == rows:
            return value[picks]
        if isinstance(value, list) and len(value) == rows:
            return [value[i] for i in picks.tolist()]
        return value

    return {key: take(value) for key, value in batch.items()}


# ----- one setting ------------------------------------------------------------------------------


def build(family: str, size: str, mode: str, device: torch.device, data: dict):
    """Task, model (with the mode's checkpointing and compilation), optimizers and a base batch."""
    from vlkit.config import resolve_config
    from vlkit.engine.optim import build_optimizers
    from vlkit.engine.parallelize import apply_activation_checkpointing, apply_compile, configure_cuda_math
    from vlkit.tasks import build_task
    from vlkit.utils.tensors import move_to_device

    precision, compiled, checkpointed = {**MODES, **EXTRA_MODES}[mode]
    cfg = resolve_config([*config_words(family, size, data), f"precision={precision}"])
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build_model().to(device).train()
    configure_cuda_math(device, None)
    apply_activation_checkpointing(model, checkpointed)
    apply_compile(model, "blocks" if compiled else None)
    optimizers = build_optimizers(model, cfg)
    dataset = task.build_dataset("train")
    base = task.collate_fn("train")([dataset[i % len(dataset)] for i in range(16)])
    return cfg, task, model, optimizers, lambda rows: move_to_device(repeat_batch(base, rows), device)


def train_step(task, model, optimizers, batch, dtype) -> None:
    with torch.autocast(batch["text_ids"].device.type, dtype=dtype, enabled=dtype is not None):
        loss = task.training_step(model, batch)["loss"]
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def measure(family: str, size: str, mode: str, device_name: str, batch_size: int, steps: int, warmup: int,
            data: dict) -> dict:
    """Samples/s, step time, model FLOPs, TFLOP/s, MFU and peak memory of ``steps`` timed steps."""
    from vlkit.engine.accounting import FlopCount, device_peak_tflops, throughput_fields
    from vlkit.engine.logging import peak_memory_mb

    device = torch.device(device_name)
    cfg, task, model, optimizers, make_batch = build(family, size, mode, device, data)
    dtype = torch.bfloat16 if {**MODES, **EXTRA_MODES}[mode][0] == "bf16" else None
    batch = make_batch(batch_size)
    flops = FlopCount()
    with flops.counting(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        task.training_step(model, batch)  # the forward, counted eagerly (its graph is dropped)
    for _ in range(max(warmup, 1)):  # at least one, so that the optimizer state exists
        train_step(task, model, optimizers, batch, dtype)
    synchronize(device)
    steady_mb = current_memory_mb(device)  # weights and optimizer state, between steps
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(task, model, optimizers, batch, dtype)
    synchronize(device)
    elapsed = time.perf_counter() - started
    samples_per_s = batch_size * steps / elapsed
    per_sample = flops.total / batch_size
    return {
        "family": family, "size": size, "mode": mode, "device": device_name, "batch": batch_size,
        "steps": steps, "samples_per_s": samples_per_s, "step_ms": 1000 * elapsed / steps,
        **throughput_fields(per_sample, samples_per_s, device_peak_tflops(device, None)),
        "peak_memory_mb": peak_memory_mb(device), "step_memory_mb": peak_memory_mb(device) - steady_mb,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def largest_batch(family: str, size: str, mode: str, device_name: str, start: int, budget_s: float,
                  data: dict) -> dict:
    """The largest batch whose training step fits in memory: doubling from ``start``, then
    bisecting, within ``budget_s`` seconds (CUDA)."""
    device = torch.device(device_name)
    _, task, model, optimizers, make_batch = build(family, size, mode, device, data)
    dtype = torch.bfloat16
    deadline = time.monotonic() + budget_s

    def fits(rows: int) -> bool:
        try:
            train_step(task, model, optimizers, make_batch(rows), dtype)
            synchronize(device)
            return True
        except torch.OutOfMemoryError:
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            return False

    good, bad = 0, None
    rows = start
    while bad is None and time.monotonic() < deadline:
        if fits(rows):
            good, rows = rows, rows * 2
        else:
            bad = rows
    while bad is not None and bad - good > max(1, good // 16) and time.monotonic() < deadline:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    return {"family": family, "size": size, "mode": mode, "largest_batch": good,
            "exact": bad is not None and bad - good <= max(1, good // 16)}


def current_memory_mb(device: torch.device) -> float:
    """Memory in use now: CUDA allocated, or the process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} threads (torch {torch.__version__})")


# ----- the table --------------------------------------------------------------------------------


def run_child(args: argparse.Namespace, *words: str) -> dict | str:
    command = [sys.executable, __file__, "--data", args.data, "--steps", str(args.steps), "--warmup",
               str(args.warmup), *words]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        return lines[-1][:160]
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(r: dict) -> str:
    mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
    return (f"| {r['family']} | {r['size']} | {r['mode']} | {r['batch']} | {r['samples_per_s']:.2f} | "
            f"{r['step_ms']:.0f} | {r.get('model_flops_per_sample', 0) / 1e9:.1f} | {r.get('tflops', 0):.3f} | "
            f"{mfu} | {r['peak_memory_mb']:.0f} | {r['step_memory_mb']:.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--sizes", default="tiny")
    parser.add_argument("--modes", help=f"default: {','.join(MODES)} on CUDA; {','.join(CPU_MODES)} on a CPU, "
                        "where bf16 autocast is many times slower than fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=0, help="batch size (0: a default per size and device)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-search", type=float, default=0, metavar="SECONDS",
                        help="also find the largest batch (bf16 eager, with and without checkpointing), "
                             "spending at most SECONDS per search (CUDA)")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "vlkit_bench_data"))
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--one", nargs=4, metavar=("FAMILY", "SIZE", "MODE", "DEVICE"), help=argparse.SUPPRESS)
    parser.add_argument("--search", nargs=4, metavar=("FAMILY", "SIZE", "MODE", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.modes = args.modes or ",".join(MODES if args.device.startswith("cuda") else CPU_MODES)
    data = prepare_data(Path(args.data))
    if args.one or args.search:
        family, size, mode, device = args.one or args.search
        batch = args.batch or DEFAULT_BATCH[(size, torch.device(device).type)]
        result = (measure(family, size, mode, device, batch, args.steps, args.warmup, data) if args.one
                  else largest_batch(family, size, mode, device, batch, args.batch_search, data))
        print(json.dumps(result))
        return 0
    results, searches = [], []
    print(f"# {time.strftime('%Y-%m-%d')}, {machine()}")
    print("| family | size | mode | batch | samples/s | ms/step | GFLOP/sample | TFLOP/s | MFU | peak MiB | "
          "step MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for size in args.sizes.split(","):
        for family in args.families.split(","):
            for mode in args.modes.split(","):
                r = run_child(args, "--one", family, size, mode, args.device, "--batch", str(args.batch))
                if isinstance(r, str):
                    print(f"| {family} | {size} | {mode} | failed: {r} |", flush=True)
                    continue
                results.append(r)
                print(row(r), flush=True)
            if args.batch_search and args.device.startswith("cuda"):
                for mode in SEARCH_MODES:
                    found = run_child(args, "--search", family, size, mode, args.device,
                                      "--batch-search", str(args.batch_search))
                    searches.append(found if isinstance(found, dict) else {"family": family, "mode": mode, "error": found})
                    print(f"largest batch, {family} {size} {mode}: {found}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                                               "results": results, "batch_search": searches}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training-step throughput and peak memory of VLC pre-training (MLM + ITM + WPA + MAE).

Measures forward, backward and AdamW step on random batches (no data loading), for VLC-Base
(ViT-B/16, 384 px, 40 text tokens, ``task_mlm_itm_mae``) and ``tiny``, in fp32 and bf16, on CPU and
on CUDA when available. Each setting runs in its own process so its peak memory is its own.

    python benchmarks/train_step.py                      # every setting this machine can run
    python benchmarks/train_step.py --models tiny --devices cpu --precisions fp32
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

MODELS = {
    "vlc_base": ["task_mlm_itm_mae", "image_size=384", "max_text_len=40"],
    "tiny": ["task_mlm_itm_mae", "tiny", "max_text_len=40"],
}
PRECISIONS = {"fp32": 32, "bf16": "bf16"}
DEFAULT_BATCH = {("vlc_base", "cpu"): 4, ("vlc_base", "cuda"): 64, ("tiny", "cpu"): 32, ("tiny", "cuda"): 256}


def random_batch(cfg, batch_size: int, device: torch.device) -> dict:
    """A pre-training batch of random tokens and images, all ``max_text_len`` tokens real."""
    length, size = cfg.max_text_len, cfg.image_size
    ids = torch.randint(5, cfg.vocab_size, (batch_size, length))
    labels = torch.full_like(ids, -100)
    masked = torch.rand(ids.shape) < cfg.mlm_prob
    labels[masked] = ids[masked]
    batch = {
        "text_ids": ids, "text_masks": torch.ones_like(ids), "text_labels_mlm": labels,
        "text_ids_mlm": torch.where(masked, torch.full_like(ids, 4), ids),
        "image": torch.randn(batch_size, 3, size, size),
        "false_image_0": torch.randn(batch_size, 3, size, size),
    }
    return {key: value.to(device) for key, value in batch.items()}


def measure(model_name: str, precision: str, device_name: str, batch_size: int, steps: int) -> dict:
    """Samples/s and peak memory of ``steps`` timed training steps (after 2 warm-up steps)."""
    from vlkit.config import resolve_config
    from vlkit.engine.optim import build_optimizer
    from vlkit.tasks.pretrain import PretrainTask

    cfg = resolve_config([*MODELS[model_name], f"precision={PRECISIONS[precision]}"])
    device = torch.device(device_name)
    task = PretrainTask(cfg)
    model = task.build_model().to(device).train()
    optimizer = build_optimizer(model, cfg)
    batch = random_batch(cfg, batch_size, device)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = task.training_step(model, batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - started
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": model_name, "precision": precision, "device": device_name, "batch": batch_size,
        "steps": steps, "samples_per_s": batch_size * steps / elapsed,
        "step_ms": 1000 * elapsed / steps, "peak_memory_mb": peak_mb,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,vlc_base")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=0, help="batch size (0: a default per model and device)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "PRECISION", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, precision, device = args.one
        batch = args.batch or DEFAULT_BATCH[(model, device)]
        print(json.dumps(measure(model, precision, device, batch, args.steps)))
        return 0
    results = []
    print(f"# {time.strftime('%Y-%m-%d')}, {machine()}")
    print("| model | device | precision | batch | samples/s | ms/step | peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for device in args.devices.split(","):
        for model in args.models.split(","):
            for precision in args.precisions.split(","):
                command = [sys.executable, __file__, "--one", model, precision, device,
                           "--batch", str(args.batch), "--steps", str(args.steps)]
                done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
                if done.returncode != 0:
                    print(f"| {model} | {device} | {precision} | failed: {done.stderr.strip().splitlines()[-1]} |")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                results.append(r)
                print(f"| {model} | {device} | {precision} | {r['batch']} | {r['samples_per_s']:.1f} | "
                      f"{r['step_ms']:.0f} | {r['peak_memory_mb']:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "machine": machine(), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

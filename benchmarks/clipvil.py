#!/usr/bin/env python
"""CLIP-ViL training-step throughput and peak memory (docs/benchmarks.md).

One optimizer step of stage-two pre-training (MLM + ITM + QA over 9500 answers in one pass,
backward, AdamW for the transformer + SGD for the CLIP ResNet) on random batches at the published
canvas (384 x 640), with 100 sub-sampled grid cells or all 240. Each setting runs in its own process.

    python benchmarks/clipvil.py [--models RN50,RN50x4] [--batch 2] [--steps 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SETTINGS = [(model, sub) for model in ("RN50", "RN50x4") for sub in (True, False)]


def one(model_name: str, sub_sampling: bool, batch: int, steps: int, device: str) -> dict:
    import torch
    from omegaconf import OmegaConf

    from vlkit.config.cli_with import resolve_config
    from vlkit.engine.logging import peak_memory_mb
    from vlkit.engine.optim import build_optimizers
    from vlkit.models.build import build_model
    from vlkit.tasks.clipvil import ClipVilPretrainTask

    cfg = resolve_config(["clip_rn50_stage_two", f"clip_model_name={model_name}", f"sub_sampling={sub_sampling}",
                          f"device={device}"])
    model = build_model(cfg).to(device).train()
    task = ClipVilPretrainTask(OmegaConf.merge(cfg, {}))
    optimizers = build_optimizers(model, cfg)
    torch.manual_seed(0)
    pixel_mask = torch.ones(batch, 384, 640, dtype=torch.uint8)
    pixel_mask[:, :, :64] = 0
    ids = torch.randint(1000, 30000, (batch, 20))
    batch_dict = {"text_ids": ids, "text_ids_mlm": ids, "text_masks": torch.ones(batch, 20, dtype=torch.long),
                  "text_labels_mlm": torch.where(torch.rand(batch, 20) < 0.15, ids, -100),
                  "image": torch.randn(batch, 3, 384, 640), "image_pixel_mask": pixel_mask,
                  "itm_labels": torch.randint(0, 2, (batch,)), "qa_labels": torch.randint(0, 9500, (batch,))}
    batch_dict = {k: v.to(device) for k, v in batch_dict.items()}
    dtype = torch.float16 if device == "cuda" else None

    def step():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = task.training_step(model, batch_dict)["loss"]
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    return {"model": model_name, "sub_sampling": sub_sampling, "visual_tokens": 100 if sub_sampling else 240,
            "batch": batch, "device": device, "s_per_step": seconds, "samples_per_s": batch / seconds,
            "peak_memory_mb": peak_memory_mb(torch.device(device))}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="RN50,RN50x4")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1] == "True", args.batch, args.steps, args.device)))
        return 0
    for model, sub in SETTINGS:
        if model in args.models.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", model, str(sub), "--batch", str(args.batch),
                                  "--steps", str(args.steps), "--device", args.device],
                                 capture_output=True, text=True, check=True)
            print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""CLIP-ViL on the synthetic set (docs/benchmarks.md): stage one (MLM + ITM), stage two (+ QA) from
stage one's last ``EpochNN``, VQA from stage two's QA head, and VQA from scratch for comparison,
all through the seed's command line (``vlkit.cli.clipvil``) with ``clipvil_tiny`` on the CPU.

    python benchmarks/clipvil_synthetic.py [--images 400] [--epochs 6] [--out runs/clipvil_synthetic]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vlkit.cli.clipvil import run  # noqa: E402
from vlkit.data.synthetic import write_synthetic  # noqa: E402

PRETRAIN = ["--train", "mscoco_train,mscoco_nominival,vgnococo", "--valid", "mscoco_minival", "--taskMaskLM",
            "--taskMatched", "--objMaskRate", "0.0", "--sub_sampling", "--sub_feat_num", "4",
            "--aspect_ratio_group_factor", "0"]
VQA = ["--train", "train,nominival", "--valid", "minival", "--loss_scale", "500"]


def flags(data: dict, epochs: int, output: str, *extra: str) -> list[str]:
    """The seed's fixed flags (single-stream, raw images, CLIP RN50 layout, separate SGD) at tiny size."""
    return ["--llayers", "2", "--xlayers", "0", "--rlayers", "0", "--visualbert_style", "--input_raw_images",
            "--use_clip", "--vqa_style_transform", "--clip_model_name", "RN50", "--use_positional_embedding",
            "--use_separate_optimizer_for_visual", "--sgd_lr", "0.01", "--batchSize", "16", "--lr", "1e-3",
            "--epochs", str(epochs), "--warmup_ratio", "0.1", "--data_root", data["clipvil"]["root"],
            "--tokenizer", data["tokenizer"], "--device", "cpu", "--output", output, *extra,
            "clipvil_tiny", f"vocab_size={data['vocab_size']}", "per_gpu_batchsize=16", "batch_size=16",
            "progress_bar=False"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default="runs/clipvil_synthetic")
    args = parser.parse_args()
    data = write_synthetic(os.path.join(args.out, "synthetic"), num_images=args.images, seed=0, image_size=64)
    snap, last = os.path.join(args.out, "snap"), f"Epoch{args.epochs:02d}"
    started, results = time.perf_counter(), {}
    results["stage_one"] = run("pretrain", flags(data, args.epochs, f"{snap}/one", *PRETRAIN))["val"]
    results["stage_two"] = run("pretrain", flags(data, args.epochs, f"{snap}/two", *PRETRAIN, "--taskQA", "--load",
                                                 f"{snap}/one/{last}", "--not_load_scheduler",
                                                 "--not_load_adam_optimizer"))["val"]
    results["vqa_from_pretraining"] = run("vqa", flags(data, args.epochs, f"{snap}/vqa", *VQA, "--loadLXMERTQA",
                                                       f"{snap}/two/{last}"))["val"]
    results["vqa_from_scratch"] = run("vqa", flags(data, args.epochs, f"{snap}/vqa_scratch", *VQA))["val"]
    results["wall_s"] = round(time.perf_counter() - started)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

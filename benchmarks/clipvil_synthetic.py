#!/usr/bin/env python
"""CLIP-ViL on the synthetic set (docs/benchmarks.md): a CLIP-style contrastive warm-up of the tiny
ResNet and a text tower (``vlkit.clipvil.contrastive``, loaded with ``--clip_path`` as the published
model loads CLIP), stage one (MLM + ITM), stage two (+ QA) from stage one's last checkpoint, VQA
from stage two's QA head, and VQA from scratch (a random ResNet) for comparison, all through the
seed's command line (``vlkit.cli.clipvil``) with ``clipvil_tiny`` on the CPU, every evaluation with
its blank-image baseline (``eval_image_ablation``).

    python benchmarks/clipvil_synthetic.py [--images 400] [--seed 0] [--scale 1] [--out runs/clipvil_synthetic]

``run_seed`` is what ``benchmarks/learning.py`` calls for the CLIP-ViL family.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vlkit.cli.clipvil import clip_pretrain, run  # noqa: E402
from vlkit.data.synthetic import write_synthetic  # noqa: E402

PRETRAIN = ["--train", "mscoco_train,mscoco_nominival,vgnococo", "--valid", "mscoco_minival", "--taskMaskLM",
            "--taskMatched", "--objMaskRate", "0.0", "--aspect_ratio_group_factor", "0"]
VQA = ["--train", "train,nominival", "--valid", "minival", "--loss_scale", "500"]
STEPS = {"clip": 300, "one": 400, "two": 200, "vqa": 150}
"""Optimizer steps of each run at ``scale=1`` (batch 32 for the contrastive warm-up, 16 for the rest):
about 70 s + 150 s for a seed in one thread."""


def flags(data: dict, output: str, seed: int, steps: int, *extra: str) -> list[str]:
    """The seed's fixed flags (single-stream, raw images, CLIP RN50 layout, separate SGD) at tiny
    size, ``steps`` optimizer steps, evaluation with the blank-image baseline."""
    return ["--llayers", "2", "--xlayers", "0", "--rlayers", "0", "--visualbert_style", "--input_raw_images",
            "--use_clip", "--vqa_style_transform", "--clip_model_name", "RN50", "--use_positional_embedding",
            "--use_separate_optimizer_for_visual", "--sgd_lr", "0.01", "--batchSize", "16", "--lr", "1e-3",
            "--epochs", "100", "--warmup_ratio", "0.1", "--seed", str(seed), "--data_root", data["clipvil"]["root"],
            "--tokenizer", data["tokenizer"], "--device", "cpu", "--output", output, *extra,
            "clipvil_tiny", f"vocab_size={data['vocab_size']}", "per_gpu_batchsize=16", "batch_size=16",
            f"max_steps={steps}", f"val_check_interval={steps}", "progress_bar=False", "eval_image_ablation=True"]


def last_prefix(folder: str) -> str:
    """The newest ``<folder>/EpochNN[StepS]`` prefix a pre-training run wrote (its ``_LXRT.pth``)."""
    files = glob.glob(os.path.join(folder, "Epoch*_LXRT.pth"))
    if not files:
        raise FileNotFoundError(f"no Epoch*_LXRT.pth in {folder}: did the pre-training run finish?")
    return max(files, key=os.path.getmtime)[: -len("_LXRT.pth")]


def _pick(val: dict, names: tuple[str, ...]) -> dict:
    return {name: round(float(val[name]), 4) for name in names if name in val}


def run_seed(data: dict, out: str, seed: int, scale: float = 1.0) -> dict:
    """The contrastive warm-up, stage one and stage two from its CLIP file, VQA from stage two and
    VQA from scratch (a random ResNet) for one ``seed`` on the synthetic set ``data``
    (``write_synthetic``'s summary); ``scale`` multiplies every run's steps. Returns ``clip`` (the
    warm-up's first and final loss, validation retrieval accuracies and their chance), ``pretrain``
    (stage two's ITM, QA, MLM with blank-image values, ``itm_chance``, and stage one's ITM as
    ``stage_one_*``), ``VQAv2`` (pre-trained / scratch score and their blank values, ``chance``)
    and ``seconds``."""
    steps = {name: max(2, round(count * scale)) for name, count in STEPS.items()}
    snap, started = os.path.join(out, f"seed{seed}"), time.perf_counter()
    clip_path = f"{snap}/clip/tiny_clip.pt"
    clip = clip_pretrain(["--data_root", data["clipvil"]["root"], "--tokenizer", data["tokenizer"], "--output",
                          clip_path, "--steps", str(steps["clip"]), "--seed", str(seed), "clipvil_tiny"])
    warm = ("--clip_path", clip_path)
    one = run("pretrain", flags(data, f"{snap}/one", seed, steps["one"], *PRETRAIN, *warm))["val"]
    two = run("pretrain", flags(data, f"{snap}/two", seed, steps["two"], *PRETRAIN, *warm, "--taskQA", "--load",
                                last_prefix(f"{snap}/one"), "--not_load_scheduler", "--not_load_adam_optimizer"))["val"]
    pretrained = run("vqa", flags(data, f"{snap}/vqa", seed, steps["vqa"], *VQA, *warm, "--loadLXMERTQA",
                                  last_prefix(f"{snap}/two")))["val"]
    scratch = run("vqa", flags(data, f"{snap}/vqa_scratch", seed, steps["vqa"], *VQA))["val"]
    names = ("itm_accuracy", "itm_accuracy_blank", "qa_accuracy", "qa_accuracy_blank", "mlm_accuracy",
             "mlm_accuracy_blank")
    return {
        "clip": {name: round(clip[name], 4) for name in ("first_loss", "loss", "text_to_image", "image_to_text",
                                                          "chance")},
        "pretrain": {**_pick(two, names), "itm_chance": 0.5,
                     **{f"stage_one_{k}": v for k, v in _pick(one, names[:2]).items()}},
        "VQAv2": {"pretrained": round(pretrained["score"], 4), "pretrained_blank": round(pretrained["score_blank"], 4),
                  "scratch": round(scratch["score"], 4), "scratch_blank": round(scratch["score_blank"], 4),
                  "chance": round(pretrained["chance"], 4)},
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every run's steps (smoke test: 0.02)")
    parser.add_argument("--out", default="runs/clipvil_synthetic")
    args = parser.parse_args()
    data = write_synthetic(os.path.join(args.out, "synthetic"), num_images=args.images, seed=0, image_size=64)
    print(json.dumps(run_seed(data, os.path.join(args.out, "snap"), args.seed, args.scale), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

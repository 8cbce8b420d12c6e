"""Retrieval evaluation cost: pairs/s of the ``exact`` protocol and wall time of ``exact`` and
``fast``, on the synthetic Flickr30K test split, extrapolated to COCO 5k images x 25k captions.

The model is randomly initialised (only speed is measured). ``tiny`` runs the whole synthetic
split; ``vlc_base`` (ViT-B/16 + 40 text tokens, 384 px as VLC's retrieval fine-tuning) scores a
few images x captions on CPU (``--base-cpu-images``, ``--base-cpu-captions``), the whole split on
CUDA. The ``fast`` timing of a subset is not representative (its candidates cover most pairs).

    python benchmarks/retrieval_eval.py                         # tiny and vlc_base, this machine
    python benchmarks/retrieval_eval.py --models tiny --out results.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch

COCO_IMAGES, COCO_CAPTIONS = 5000, 25010
MODELS = {
    "tiny": ["task_finetune_irtr_f30k_mae_randaug", "tiny", "loss_names.itc=1"],
    "vlc_base": ["task_finetune_irtr_f30k_mae_randaug", "image_size=384", "max_text_len=40", "loss_names.itc=1"],
}
PRECISION = {"cpu": 32, "cuda": "bf16"}


def synthetic_set(out_dir: str, images: int) -> dict:
    from vlkit.data.synthetic import write_synthetic

    info_path = os.path.join(out_dir, "synth_info.json")
    if os.path.isfile(info_path):
        return json.load(open(info_path))
    return write_synthetic(out_dir, num_images=images, image_size=64)


def measure(model_name: str, device_name: str, data: str, info: dict, k_test: int, max_images: int | None,
            max_captions: int | None, pairs_per_batch: int) -> dict:
    """Run both protocols once (after a warm-up on CUDA) and return their timings."""
    from vlkit.eval.retrieval_eval import RetrievalTexts
    from vlkit.config import resolve_config
    from vlkit.eval.retrieval_eval import RetrievalEvaluator
    from vlkit.tasks.irtr import IRTRTask

    cfg = resolve_config([
        *MODELS[model_name], f"data_root={data}", f"tokenizer={info['tokenizer']}", f"vocab_size={info['vocab_size']}",
        "progress_bar=False", f"precision={PRECISION[device_name]}", f"per_gpu_batchsize={min(8, max_images or 8)}",
    ])
    device = torch.device(device_name)
    task = IRTRTask(cfg)
    model = task.build_model().to(device).eval()
    loader, texts = task.recall_inputs("test")
    if max_captions is not None:
        texts = RetrievalTexts(texts.ids[:max_captions], texts.masks[:max_captions], texts.image_rows[:max_captions])
    batches = [batch for batch in loader]
    if max_images is not None:
        kept, total = [], 0
        for batch in batches:
            if total >= max_images:
                break
            kept.append(batch)
            total += len(batch["img_index"])
        batches = kept
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if PRECISION[device_name] == "bf16" else None
    results = {"model": model_name, "device": device_name, "precision": str(PRECISION[device_name]),
               "images": sum(len(b["img_index"]) for b in batches), "captions": len(texts.ids)}
    for protocol in ("exact", "fast"):
        evaluator = RetrievalEvaluator(model, lambda f: model.rank_output(f["cls_feats"])[:, 0], protocol,
                                       k_test=k_test, pairs_per_batch=pairs_per_batch, progress=False)
        with torch.no_grad(), (autocast or torch.autocast("cpu", enabled=False)):
            if device.type == "cuda":
                evaluator.evaluate(batches[:1], texts)  # warm-up
                torch.cuda.synchronize()
            started = time.perf_counter()
            metrics = evaluator.evaluate(batches, texts)
            if device.type == "cuda":
                torch.cuda.synchronize()
        results[protocol] = {"seconds": time.perf_counter() - started, "pairs": metrics["pairs_scored"],
                             "pairs_per_s": metrics["pairs_per_s"]}
    rate = results["exact"]["pairs_per_s"]
    fast_pairs_coco = min(COCO_IMAGES * COCO_CAPTIONS, (COCO_IMAGES + COCO_CAPTIONS) * k_test)
    results["coco_5k_extrapolated_hours"] = {
        "exact": COCO_IMAGES * COCO_CAPTIONS / rate / 3600,
        "fast_upper_bound": fast_pairs_coco / rate / 3600,
    }
    results["k_test"] = k_test
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--images", type=int, default=600, help="synthetic scenes to generate")
    parser.add_argument("--data", default=None, help="existing synthetic set (default: a temporary one)")
    parser.add_argument("--k-test", type=int, default=16)
    parser.add_argument("--base-cpu-images", type=int, default=2, help="images scored by vlc_base on CPU")
    parser.add_argument("--base-cpu-captions", type=int, default=40, help="captions scored by vlc_base on CPU")
    parser.add_argument("--pairs-per-batch", type=int, default=512)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = args.data or tempfile.mkdtemp(prefix="vlkit_retrieval_bench_")
    info = synthetic_set(data, args.images)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for model in args.models:
            small = model == "vlc_base" and device == "cpu"
            row = measure(model, device, data, info, args.k_test, args.base_cpu_images if small else None,
                          args.base_cpu_captions if small else None, args.pairs_per_batch)
            row["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs" if device == "cpu" \
                else torch.cuda.get_device_name()
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()

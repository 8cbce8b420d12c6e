"""Images/s of JPEG decode + augmentation per data-loader worker, for each family's training transform.

The benchmark writes its own input: ``--images`` photo-sized JPEGs (640x480 by default: colour
gradients, a few soft blobs and pixel noise, quality 90, about 130 KB each; COCO's train2014 JPEGs
average about 160 KB), stored both as a ViLT-layout Arrow table (``f30k_caption_karpathy_train``,
read by ``F30kCaptionDataset``) and as files with json annotations (ALBEF pre-training json for
``JsonPretrainDataset``, CLIP-ViL's LXMERT VQA json for ``LxmertVqaDataset``, an ImageFolder for
``main_finetune.py``'s ``SafeImageFolder``). Every transform runs through the real dataset class
and a ``DataLoader`` (``image_only``: no text tokenisation for the caption datasets) with each
``--workers`` count.

Reported per (transform, source, workers):

* images/s (wall clock, after ``max(1, workers)`` warm-up batches) and that divided by the workers
  (workers = 0: the main process alone). On a machine whose cores are busy with other work these
  say more about the machine than about the pipeline;
* images per CPU second: images over the CPU time of the processes that decoded and augmented
  them (each process timed from the first batch it built, so worker start-up is left out), which
  is what one worker delivers on a core of its own, however busy the machine;
* workers needed = GPU samples/s / images per CPU second (of the 1-worker run when there is one):
  the workers (one core each) that keep one GPU fed. The GPU rates are estimates for a base-size
  model on one H100 in bf16 with ``torch.compile`` (``FAMILIES``) until the training-step
  benchmark measures them; override them with ``--gpu-samples-per-s key=rate,...``.

It also compares the JPEG decoders on the same bytes, in CPU ms per image: PIL
(``Image.open(...).convert("RGB")``, what the datasets use) against ``torchvision.io.decode_jpeg``
on the CPU, alone and followed by the conversion to a PIL image that the transforms need, with the
largest pixel difference on 4:2:0, 4:4:4, progressive and greyscale JPEGs.

    python benchmarks/data_pipeline.py                         # every transform, 0/1/2 workers
    python benchmarks/data_pipeline.py --transforms pixelbert --workers 0 --images 16 --json out.json
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import PIL
import pyarrow as pa
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg


@dataclass(frozen=True)
class Family:
    """A transform as one family trains with it: image side and the GPU rate it must feed."""

    model: str
    image_size: int
    gpu_samples_per_s: float
    sources: tuple[str, ...] = ("arrow", "json")


GPU_SAMPLES_PER_S_NOTE = "estimates for a base-size model on one H100, bf16 + torch.compile, not measured yet"
FAMILIES = {
    "mae_randaug": Family("VLC-B/16 fine-tuning, 384 px", 384, 400),
    "pixelbert": Family("ViLT-B/32, shorter side 384", 384, 1200),
    "clip_randaug": Family("METER CLIP-ViT-B/16 + RoBERTa, 384 px", 384, 250),
    "albef_pretrain": Family("ALBEF / GRIT-VLP ViT-B/16 pre-training, 256 px", 256, 600),
    "clipvil_canvas": Family("CLIP-ViL RN50 grid + LXMERT, 384x640 canvas", 384, 350, ("json",)),
    "imagenet_timm": Family("ViT-B/16 ImageNet fine-tuning (main_finetune.py), 224 px", 224, 1500, ("json",)),
}
"""Default transforms. ``clipvil_canvas`` and ``imagenet_timm`` read image files only (LXMERT json,
ImageFolder), so they have no Arrow source; any other ``build_transform`` key is accepted too
(384 px, the VLC-B/16 rate)."""
OTHER_KEY_FAMILY = Family("build_transform key at 384 px (VLC-B/16 rate)", 384, 400)
PHOTO_SIZE = (640, 480)
JPEG_QUALITY = 90
TABLE = "f30k_caption_karpathy_train"
CLIP_CHECK_SIZE = 384
CAPTION = "a photo of a smooth colourful gradient"


# --- input ---


def photo_jpeg(rng: np.random.Generator, width: int, height: int, quality: int = JPEG_QUALITY, **options: Any) -> bytes:
    """A photo-like JPEG: a random colour gradient, three soft blobs and Gaussian pixel noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    corners = rng.uniform(0, 255, size=(4, 3)).astype(np.float32)
    u, v = (x / width)[..., None], (y / height)[..., None]
    pixels = (corners[0] * (1 - u) * (1 - v) + corners[1] * u * (1 - v)
              + corners[2] * (1 - u) * v + corners[3] * u * v)
    for _ in range(3):
        cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(30, 150)
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius ** 2))[..., None]
        pixels = pixels * (1 - weight) + rng.uniform(0, 255, 3).astype(np.float32) * weight
    pixels += rng.normal(0, 16, pixels.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def coco_id(index: int) -> str:
    return f"COCO_train2014_{index:012d}"


def write_inputs(root: str, jpegs: Sequence[bytes]) -> None:
    """The JPEGs as an Arrow table (``root/arrow``), COCO-named files (``root/mscoco/train2014``) with
    an ALBEF pre-training json and an LXMERT VQA json, and an ImageFolder (``root/imagefolder``)."""
    for folder in ("arrow", os.path.join("mscoco", "train2014"), os.path.join("imagefolder", "train", "photo")):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    ids = [coco_id(i) for i in range(len(jpegs))]
    table = pa.table({
        "image": pa.array(jpegs, pa.binary()), "caption": [[CAPTION]] * len(jpegs),
        "image_id": ids, "split": ["train"] * len(jpegs),
    })
    with pa.OSFile(os.path.join(root, "arrow", f"{TABLE}.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    for image_id, data in zip(ids, jpegs):
        for folder in (os.path.join("mscoco", "train2014"), os.path.join("imagefolder", "train", "photo")):
            with open(os.path.join(root, folder, f"{image_id}.jpg"), "wb") as handle:
                handle.write(data)
    pretrain = [{"image": f"mscoco/train2014/{image_id}.jpg", "caption": CAPTION} for image_id in ids]
    vqa = [{"question_id": i, "img_id": image_id, "sent": "what colour is it?", "label": {"red": 1.0}}
           for i, image_id in enumerate(ids)]
    for name, entries in (("pretrain.json", pretrain), ("vqa_train.json", vqa)):
        with open(os.path.join(root, name), "w") as handle:
            json.dump(entries, handle)


# --- datasets ---


def tokenizer():
    """A small WordPiece tokenizer for the datasets' text fields (built offline)."""
    from vlkit.data.synthetic import build_tokenizer

    return build_tokenizer([CAPTION, "what colour is it? red"])


def build_dataset(key: str, source: str, root: str, image_size: int) -> Dataset:
    """The dataset class that reads ``source`` with transform ``key``."""
    if key == "clipvil_canvas":
        from vlkit.data.canvas import ResizePadNormalize
        from vlkit.data.datasets.lxmert import LxmertImages, LxmertVqaDataset
        from vlkit.data.lxmert import vqa_questions

        questions = vqa_questions([os.path.join(root, "vqa_train.json")], {"red": 0}, require_labels=True)
        images = LxmertImages(root, ResizePadNormalize(image_size, image_size * 5 // 3))  # 384 x 640
        return LxmertVqaDataset(questions, images, tokenizer(), max_text_len=20)
    if key == "imagenet_timm":
        from vlkit.imagenet.args import get_args_parser
        from vlkit.imagenet.data import SafeImageFolder, build_transform

        args = get_args_parser().parse_args(["--input_size", str(image_size)])
        return SafeImageFolder(os.path.join(root, "imagefolder", "train"), build_transform(True, args), replace_unreadable=True)
    options = dict(tokenizer=tokenizer(), transform_keys=[key], image_size=image_size, image_only=True)
    if source == "arrow":
        from vlkit.data.datasets.captions import F30kCaptionDataset

        return F30kCaptionDataset("train", data_root=os.path.join(root, "arrow"), **options)
    from vlkit.data.datasets.json_datasets import JsonPretrainDataset

    return JsonPretrainDataset("train", split_files={"train": "pretrain.json", "val": "", "test": ""},
                               image_root=root, data_root=root, **options)


@dataclass
class Batch:
    """A collated batch and the CPU seconds its process (worker or main) had used when it was ready."""

    images: torch.Tensor
    pid: int
    cpu_s: float


def stack_images(samples: Sequence[Any]) -> Batch:
    """The batch's images stacked (dict samples: ``image``; ImageFolder samples: the first item),
    stamped with the collating process's id and CPU time."""
    images = torch.stack([sample["image"] if isinstance(sample, dict) else sample[0] for sample in samples])
    return Batch(images, os.getpid(), time.process_time())


@dataclass
class Rate:
    images_per_s: float
    """Wall-clock rate of the whole loader (all workers), after the warm-up batches."""
    images_per_cpu_s: float
    """Images per CPU second of the processes that built them: one worker's rate on a core of its own."""


def measure(dataset: Dataset, workers: int, num_images: int, batch_size: int) -> Rate:
    """Steady-state rates of a ``DataLoader`` over ``num_images`` samples (``dataset`` repeated).

    Wall clock: timed after ``max(1, workers)`` warm-up batches. CPU: each process's CPU time
    between the first batch it collated and its last, over the images of the batches after its
    first (so worker start-up is left out), summed over the processes.
    """
    indices = [i % len(dataset) for i in range(num_images)]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers, collate_fn=stack_images)
    warmup = max(1, workers)
    if len(loader) <= warmup + max(1, workers):
        raise ValueError(f"{num_images} images in batches of {batch_size} leave too little to time after {warmup} "
                         f"warm-up batch(es); raise --images")
    seen, start = 0, 0.0
    first_cpu: dict[int, float] = {}
    last_cpu: dict[int, float] = {}
    cpu_images = 0
    for position, batch in enumerate(loader):
        if position == warmup - 1:
            start = time.perf_counter()
        elif position >= warmup:
            seen += len(batch.images)
        if batch.pid in first_cpu:
            cpu_images += len(batch.images)
        else:
            first_cpu[batch.pid] = batch.cpu_s
        last_cpu[batch.pid] = batch.cpu_s
    wall = time.perf_counter() - start
    cpu = sum(last_cpu[pid] - first_cpu[pid] for pid in first_cpu)
    return Rate(seen / wall, cpu_images / cpu)


# --- decoders ---


def pil_decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def torchvision_decode(data: bytes) -> torch.Tensor:
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def torchvision_decode_to_pil(data: bytes) -> Image.Image:
    return Image.fromarray(torchvision_decode(data).permute(1, 2, 0).numpy())


def mean_ms(decode: Callable[[bytes], Any], jpegs: Sequence[bytes], repeats: int) -> float:
    """CPU ms per image of ``decode`` over ``repeats`` passes, after one untimed pass."""
    for data in jpegs:
        decode(data)
    start = time.process_time()
    for _ in range(repeats):
        for data in jpegs:
            decode(data)
    return (time.process_time() - start) / (repeats * len(jpegs)) * 1e3


def compare_decoders(jpegs: Sequence[bytes], repeats: int, seed: int, size: tuple[int, int]) -> dict[str, Any]:
    """CPU ms per image of each decoder on ``jpegs``; the largest pixel difference PIL vs
    ``decode_jpeg`` on them and on ``size`` re-encodings with 4:4:4 chroma, progressive scans and
    greyscale; and decode + the deterministic ``clip`` transform (bicubic resize, centre crop) fed
    the PIL image or the ``decode_jpeg`` tensor: CPU ms and largest output difference."""
    from vlkit.data.transforms import build_transform

    rng = np.random.default_rng(seed + 1)
    variants = {
        "4:2:0 baseline (the benchmark's)": list(jpegs),
        "4:4:4": [photo_jpeg(rng, *size, subsampling=0) for _ in range(3)],
        "progressive": [photo_jpeg(rng, *size, progressive=True) for _ in range(3)],
        "greyscale": [_greyscale(photo_jpeg(rng, *size)) for _ in range(3)],
    }
    max_diff = {
        name: int(max(np.abs(np.asarray(pil_decode(data), dtype=np.int16)
                             - torchvision_decode(data).permute(1, 2, 0).numpy()).max() for data in datas))
        for name, datas in variants.items()
    }
    clip = build_transform("clip", CLIP_CHECK_SIZE)
    return {
        "ms_per_image": {
            "pil": mean_ms(pil_decode, jpegs, repeats),
            "torchvision_decode_jpeg": mean_ms(torchvision_decode, jpegs, repeats),
            "torchvision_decode_jpeg_to_pil": mean_ms(torchvision_decode_to_pil, jpegs, repeats),
            f"pil + clip({CLIP_CHECK_SIZE})": mean_ms(lambda data: clip(pil_decode(data)), jpegs, repeats),
            f"decode_jpeg tensor + clip({CLIP_CHECK_SIZE})": mean_ms(
                lambda data: clip(torchvision_decode(data)), jpegs, repeats),
        },
        "max_abs_pixel_difference": max_diff,
        "clip_output_max_abs_difference_tensor_vs_pil": float(max(
            (clip(pil_decode(data)) - clip(torchvision_decode(data))).abs().max() for data in jpegs)),
        "images": len(jpegs),
        "repeats": repeats,
    }


def _greyscale(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --- running ---


def family(key: str) -> Family:
    from vlkit.data.transforms import TRANSFORMS

    if key in FAMILIES:
        return FAMILIES[key]
    if key in TRANSFORMS:
        return OTHER_KEY_FAMILY
    raise SystemExit(f"unknown transform {key!r}; valid: {sorted(set(FAMILIES) | set(TRANSFORMS))}")


def parse_rates(text: str) -> dict[str, float]:
    """``key=rate,key=rate`` → {key: rate}."""
    rates = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            rates[key] = float(value)
        except ValueError:
            raise SystemExit(f"--gpu-samples-per-s item {item!r} is not key=number (e.g. pixelbert=1200)") from None
    return rates


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write the input, measure every (transform, source, workers) and compare the decoders."""
    torch.set_num_threads(1)
    transforms = [key for key in args.transforms.split(",") if key]
    sources = [source for source in args.source.split(",") if source]
    unknown = sorted(set(sources) - {"arrow", "json"})
    if unknown:
        raise SystemExit(f"--source {unknown} unknown; valid: arrow, json")
    workers = [int(count) for count in args.workers.split(",")]
    rates = {key: family(key).gpu_samples_per_s for key in transforms} | parse_rates(args.gpu_samples_per_s)
    rng = np.random.default_rng(args.seed)
    jpegs = [photo_jpeg(rng, args.width, args.height) for _ in range(args.images)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vlkit_data_bench_") as root:
        write_inputs(root, jpegs)
        for key in transforms:
            spec = family(key)
            for source in (s for s in sources if s in spec.sources):
                dataset = build_dataset(key, source, root, spec.image_size)
                per_cpu_s = {}
                for count in workers:
                    rate = measure(dataset, count, args.images * args.passes, args.batch_size)
                    per_cpu_s[count] = rate.images_per_cpu_s
                    rows.append({"transform": key, "source": source, "dataset": type(dataset).__name__,
                                 "image_size": spec.image_size, "workers": count, "images_per_s": rate.images_per_s,
                                 "images_per_s_per_worker": rate.images_per_s / max(1, count),
                                 "images_per_cpu_s": rate.images_per_cpu_s})
                    print(f"{key:>16} {source:>5} {count} worker(s): {rate.images_per_s:7.1f} images/s, "
                          f"{rate.images_per_cpu_s:7.1f} images per CPU second", flush=True)
                basis = per_cpu_s.get(1, next(iter(per_cpu_s.values())))
                for row in rows[-len(workers):]:
                    row.update(gpu_samples_per_s=rates[key], workers_needed=rates[key] / basis)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__},
        "input": {"images": args.images, "size": [args.width, args.height], "jpeg_quality": JPEG_QUALITY,
                  "mean_jpeg_kb": float(np.mean([len(data) for data in jpegs]) / 1024), "passes": args.passes,
                  "batch_size": args.batch_size},
        "gpu_samples_per_s_note": GPU_SAMPLES_PER_S_NOTE,
        "models": {key: family(key).model for key in transforms},
        "pipeline": rows,
        "decode": compare_decoders(jpegs[:args.decode_images], args.decode_repeats, args.seed, (args.width, args.height)),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = ["| transform | source (dataset) | px | workers | images/s (wall) | per worker (wall) | images per CPU s "
             "| GPU samples/s (est.) | workers needed |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["pipeline"]:
        lines.append(f"| {row['transform']} | {row['source']} ({row['dataset']}) | {row['image_size']} | {row['workers']} "
                     f"| {row['images_per_s']:.1f} | {row['images_per_s_per_worker']:.1f} | {row['images_per_cpu_s']:.1f} "
                     f"| {row['gpu_samples_per_s']:.0f} "
                     f"| {row['workers_needed']:.1f} |")
    decode = result["decode"]
    lines += ["", "| decoder | CPU ms per image |", "|---|---|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in decode["ms_per_image"].items()]
    lines += ["", "max abs pixel difference PIL vs decode_jpeg: "
              + ", ".join(f"{name}: {diff}" for name, diff in decode["max_abs_pixel_difference"].items()),
              "max abs difference of the clip transform's output, tensor vs PIL input: "
              f"{decode['clip_output_max_abs_difference_tensor_vs_pil']:.4f}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transforms", default=",".join(FAMILIES), help="comma-separated transform keys")
    parser.add_argument("--source", default="arrow,json", help="arrow, json or both (file-only transforms skip arrow)")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader num_workers values")
    parser.add_argument("--images", type=int, default=48, help="distinct JPEGs written")
    parser.add_argument("--passes", type=int, default=2, help="passes over the images per measurement")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=PHOTO_SIZE[0])
    parser.add_argument("--height", type=int, default=PHOTO_SIZE[1])
    parser.add_argument("--gpu-samples-per-s", default="",
                        help="key=rate,... overriding the GPU rate estimates: " + ", ".join(
                            f"{key}={spec.gpu_samples_per_s:g}" for key, spec in FAMILIES.items()))
    parser.add_argument("--decode-images", type=int, default=16, help="JPEGs in the decoder comparison")
    parser.add_argument("--decode-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="write the results to this file")
    args = parser.parse_args(argv)
    result = run(args)
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()

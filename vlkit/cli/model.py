"""``vlkit export`` and ``vlkit predict``: model folders and asking them questions from the shell
(``vqa``, ``match``, ``retrieve``, ``fill-mask``, ``nlvr2``, ``entailment``, ``classify``)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")


def command_export(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vlkit export", description="Write a model folder (config.yaml, model.safetensors, tokenizer/, "
        "answers.json, preprocess.json, README.md) from a run directory or checkpoint file.")
    parser.add_argument("source", help="run directory, vlkit .ckpt, sharded checkpoint folder (strategy=fsdp), "
                                       "or a foreign checkpoint (then give `with ...`)")
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow full unpickling of checkpoint formats that need it (only for files you trust)")
    parser.add_argument("words", nargs="*", help="with PRESET... key=value...: describe a checkpoint without a vlkit config")
    args = parser.parse_args(argv)
    words = args.words[1:] if args.words[:1] == ["with"] else args.words
    from vlkit.api.export import export

    try:
        folder = export(args.source, args.out, words, trust_checkpoint=args.trust_checkpoint)
    except (OSError, ValueError) as err:
        print(f"vlkit export: {err}", file=sys.stderr)
        return 2
    print(f"wrote the model folder {folder}; use it with\n  vlkit predict {folder} vqa --image IMG --question TEXT\n"
          f"  python -c \"import vlkit; print(vlkit.load('{folder}'))\"")
    return 0


def image_folder(path: str) -> list[str]:
    """The image files of a folder, sorted (or the file itself)."""
    folder = Path(path)
    if folder.is_file():
        return [str(folder)]
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {path}: no such folder")
    files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--images {path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it")
    return files


def text_lines(path: str) -> list[str]:
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"--texts {path}: the file holds no text lines")
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlkit predict", description="Ask a model folder (or run directory) a question.")
    parser.add_argument("model", help="model folder, run directory or checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tasks = parser.add_subparsers(dest="task", required=True)
    vqa = tasks.add_parser("vqa", help="top answers to questions about images")
    vqa.add_argument("--image", action="append", required=True)
    vqa.add_argument("--question", action="append", required=True)
    vqa.add_argument("--top-k", type=int, default=5)
    match = tasks.add_parser("match", help="ITM probability (and ITC cosine) of image-text pairs")
    match.add_argument("--image", action="append", required=True)
    match.add_argument("--text", action="append", required=True)
    retrieve = tasks.add_parser("retrieve", help="rank a folder of images for each text (or texts for each image)")
    retrieve.add_argument("--images", required=True, help="folder of images (or one image)")
    retrieve.add_argument("--texts", required=True, help="text file, one text per line")
    retrieve.add_argument("--query", choices=("texts", "images"), default="texts")
    retrieve.add_argument("--k", type=int, default=5)
    retrieve.add_argument("--gallery", help="a gallery file: reused when it exists, else written")
    fill = tasks.add_parser("fill-mask", help="tokens for each [MASK] of a text about an image")
    fill.add_argument("--image", required=True)
    fill.add_argument("--text", required=True)
    fill.add_argument("--top-k", type=int, default=5)
    nlvr2 = tasks.add_parser("nlvr2", help="is a statement about two images true")
    nlvr2.add_argument("--image0", required=True)
    nlvr2.add_argument("--image1", required=True)
    nlvr2.add_argument("--text", action="append", required=True)
    classify = tasks.add_parser("classify", help="top classes of images (a `vlkit imagenet` classifier)")
    classify.add_argument("--image", action="append", required=True)
    classify.add_argument("--top-k", type=int, default=5)
    entail = tasks.add_parser("entailment", help="SNLI-VE: does an image entail a hypothesis")
    entail.add_argument("--image", action="append", required=True)
    entail.add_argument("--text", action="append", required=True)
    return parser


def _retrieve(model: Any, args: argparse.Namespace) -> tuple[list, list[tuple[str, ...]]]:
    from vlkit.api.retrieval import Gallery

    images, texts = image_folder(args.images), text_lines(args.texts)
    gallery = None
    if args.gallery and Path(args.gallery).is_file():
        gallery = Gallery.load(args.gallery)
    elif args.gallery:
        gallery = (model.index_images(images) if args.query == "texts" else model.index_texts(texts))
        gallery.save(args.gallery)
    if gallery is not None:
        result = model.retrieve(texts=texts if args.query == "texts" else None,
                                images=images if args.query == "images" else None, k=args.k, gallery=gallery)
    else:
        result = model.retrieve(texts=texts, images=images, k=args.k, query=args.query)
    queries, items = (texts, images) if args.query == "texts" else (images, texts)
    rows = [(query, str(rank + 1), items[hit["index"]], f"{hit['score']:.4f}")
            for query, hits in zip(queries, result) for rank, hit in enumerate(hits)]
    return result, [("query", "rank", "match", "score"), *rows]


def run_task(model: Any, args: argparse.Namespace) -> tuple[Any, list[tuple[str, ...]]]:
    """The method's result and a table of it."""
    if args.task == "vqa":
        result = model.vqa(args.image, args.question, top_k=args.top_k)
        pairs = zip(args.image * len(args.question) if len(args.image) == 1 else args.image, args.question)
        rows = [(image, question, a["answer"], f"{a['score']:.4f}") for (image, question), top in zip(pairs, result) for a in top]
        return result, [("image", "question", "answer", "score"), *rows]
    if args.task == "match":
        result = model.match(args.image, args.text)
        count = len(result)
        images = args.image * count if len(args.image) == 1 else args.image
        texts = args.text * count if len(args.text) == 1 else args.text
        rows = [(i, t, *(f"{v:.4f}" for v in r.values())) for i, t, r in zip(images, texts, result)]
        return result, [("image", "text", *result[0].keys()), *rows]
    if args.task == "retrieve":
        return _retrieve(model, args)
    if args.task == "fill-mask":
        result = model.fill_mask(args.image, args.text, top_k=args.top_k)
        rows = [(str(m + 1), t["token"], f"{t['score']:.4f}") for m, top in enumerate(result) for t in top]
        return result, [("mask", "token", "score"), *rows]
    if args.task == "classify":
        result = model.classify(args.image, top_k=args.top_k)
        rows = [(image, hit["label"], f"{hit['score']:.4f}") for image, top in zip(args.image, result) for hit in top]
        return result, [("image", "class", "score"), *rows]
    if args.task == "nlvr2":
        result = model.nlvr2(args.image0, args.image1, args.text)
        return result, [("statement", "p(true)"), *((t, f"{r['true']:.4f}") for t, r in zip(args.text, result))]
    result = model.entailment(args.image, args.text)
    rows = [(t, *(f"{v:.4f}" for v in r.values())) for t, r in zip(args.text * len(result) if len(args.text) == 1 else args.text, result)]
    return result, [("hypothesis", *result[0].keys()), *rows]


def command_predict(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("vlkit").setLevel(logging.WARNING)
    import vlkit
    from vlkit.cli.quickstart import format_table

    try:
        model = vlkit.load(args.model, device=args.device)
        result, table = run_task(model, args)
    except (OSError, ValueError, TypeError) as err:
        print(f"vlkit predict: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_table(table))
    return 0

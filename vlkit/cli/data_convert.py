"""The ``vlkit data convert`` and ``vlkit data check`` sub-commands."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vlkit.data.convert import convert
from vlkit.data.convert.inputs import RawInputError
from vlkit.data.convert.pipeline import DEFAULT_WORKERS, FORMATS, SHARD_SIZE

DATASETS = "coco_karpathy, f30k_karpathy, vg, sbu, cc3m, vqav2, vgqa, nlvr2, snli_ve or imagenet"


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"--path takes KEY=PATH, got {text!r}")
    return key, value


def add_subcommands(commands: Any) -> None:
    """Add ``convert`` and ``check`` to ``vlkit data``'s sub-parsers."""
    convert_parser = commands.add_parser("convert", help="convert a raw dataset to Arrow tables (docs/data.md)")
    convert_parser.add_argument("name", help=f"dataset: {DATASETS}")
    convert_parser.add_argument("--root", required=True, help="folder holding the raw files in their official layout")
    convert_parser.add_argument("--out", required=True, help="folder for the Arrow tables (becomes data_root)")
    convert_parser.add_argument("--format", action="append", choices=FORMATS, dest="formats",
                                help="output format, repeatable: arrow (default), albef, lxmert")
    convert_parser.add_argument("--path", action="append", type=_key_value, default=[], metavar="KEY=PATH",
                                help="a raw input kept elsewhere than under --root (the error for a missing "
                                     "file names its KEY)")
    convert_parser.add_argument("--shard-size", type=int, default=SHARD_SIZE,
                                help=f"inputs per shard of sbu / cc3m (default {SHARD_SIZE})")
    convert_parser.add_argument("--no-verify-images", action="store_true",
                                help="do not decode each image (missing files are still skipped)")
    convert_parser.add_argument("--resume", action="store_true",
                                help="keep the tables an interrupted run finished (default: overwrite)")
    convert_parser.add_argument("--seed", type=int, default=0, help="seed of the VQAv2 rest_val draw")
    convert_parser.add_argument("--min-answer-count", type=int, default=9, help="VQA vocabulary threshold")
    convert_parser.add_argument("--rest-val-images", type=int, default=1000, help="VQAv2 val images held out")
    convert_parser.add_argument("--normalize-raw-answers", action="store_true",
                                help="count the ten VQA answers normalised (the reference counts them raw)")
    convert_parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                                help=f"threads reading and decoding images (default {DEFAULT_WORKERS})")
    convert_parser.add_argument("--no-progress", action="store_true")
    check_parser = commands.add_parser("check", help="report rows, images present / missing / corrupt, duplicate "
                                                     "ids and VQA answer coverage of a folder of Arrow tables")
    check_parser.add_argument("directory")
    check_parser.add_argument("--no-decode", action="store_true", help="do not decode the images")
    check_parser.add_argument("--json", action="store_true", help="print the full report as json")
    check_parser.add_argument("--no-progress", action="store_true")


def summary(name: str, section: dict[str, Any], out: str) -> str:
    """A few lines on what a conversion wrote and skipped."""
    lines = [f"{name}: {'table':36s} {'inputs':>8s} {'rows':>8s} {'missing':>8s} {'corrupt':>8s}"]
    for table, unit in section["tables"].items():
        lines.append(f"{name}: {table:36s} {unit['inputs']:8d} {unit['rows']:8d} {unit['images_missing']:8d} "
                     f"{unit['images_corrupt']:8d}")
    for path, count in section["json_files"].items():
        lines.append(f"{name}: {path} ({count} entries)")
    if "vqa" in section:
        vqa = section["vqa"]
        lines.append(f"{name}: answer vocabulary of {vqa['vocabulary_size']} answers seen >= {vqa['min_answer_count']} times")
        for split, counts in vqa["coverage"].items():
            if "human_answers" in counts:
                lines.append(f"{name}:   {split}: {counts['questions_kept']}/{counts['questions']} questions kept, "
                             f"{counts['human_answers_in_vocabulary']}/{counts['human_answers']} human answers in it")
    lines.append(f"{name}: skipped {dict(section['skipped_by_reason']) or 'nothing'}; details in {out}/manifest.json")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.command == "check":
        from vlkit.data.check import check_directory, format_report

        report = check_directory(args.directory, verify_images=not args.no_decode, progress=not args.no_progress)
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return 0 if report["ok"] else 1
    try:
        section = convert(
            args.name, args.root, args.out, formats=args.formats or ["arrow"], paths=dict(args.path),
            shard_size=args.shard_size, verify_images=not args.no_verify_images, resume=args.resume,
            progress=not args.no_progress, seed=args.seed, min_answer_count=args.min_answer_count,
            rest_val_images=args.rest_val_images, normalize_raw_answers=args.normalize_raw_answers,
            workers=args.workers,
        )
    except (RawInputError, KeyError, ValueError) as err:
        print(f"vlkit data convert: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    print(summary(args.name, section, args.out))
    return 0


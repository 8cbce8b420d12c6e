"""``vlkit viz``: ``elip`` (from a checkpoint, ``vlkit.viz.elip``) and, from a model folder or run,
``retrieval`` (queries and their top-k images as a grid), ``mae`` (masked input, prediction,
target) and ``align`` (the word-to-patch alignment map of a single-stream model)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from vlkit.config import ConfigError

USAGE = """usage:
  vlkit viz elip --image IMG --text TEXT --checkpoint CKPT [--out PNG] [with NAME... key=value...]
  vlkit viz retrieval --model DIR --images FOLDER --texts FILE [--k 5] [--out PNG]
  vlkit viz mae --model DIR --image IMG [--text TEXT] [--out PNG]
  vlkit viz align --model DIR --image IMG --text TEXT [--out PNG]"""


def _parser(kind: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"vlkit viz {kind}")
    parser.add_argument("--model", required=True, help="model folder, run directory or checkpoint")
    parser.add_argument("--out", default=f"{kind}.png", help=f"PNG to write (default {kind}.png)")
    if kind == "retrieval":
        parser.add_argument("--images", required=True, help="folder of gallery images")
        parser.add_argument("--texts", required=True, help="text file, one query per line")
        parser.add_argument("--k", type=int, default=5)
    else:
        parser.add_argument("--image", required=True)
        parser.add_argument("--text", required=kind == "align", default="")
    return parser


def command_viz(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in ("elip", "retrieval", "mae", "align"):
        raise ConfigError(USAGE)
    if argv[0] == "elip":
        from vlkit.viz.elip import command_elip

        return command_elip(argv[1:])
    args = _parser(argv[0]).parse_args(argv[1:])
    import vlkit
    from vlkit.api import pictures
    from vlkit.cli.model import image_folder, text_lines

    try:
        model = vlkit.load(args.model)
        if argv[0] == "retrieval":
            png = pictures.retrieval_png(model, text_lines(args.texts), image_folder(args.images), args.k)
        elif argv[0] == "mae":
            png = pictures.mae_png(model, args.image, args.text)
        else:
            png = pictures.alignment_png(model, args.image, args.text)
    except (OSError, ValueError, TypeError) as err:
        print(f"vlkit viz {argv[0]}: {err}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(png)
    print(f"wrote {args.out}")
    return 0

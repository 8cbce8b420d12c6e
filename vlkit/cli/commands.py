"""The ``vlkit`` command: ``run``, ``presets``, ``data synth|tokenizer|convert|check``, ``quickstart``,
``imagenet``, ``viz``, ``export``, ``predict`` and ``demo``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

import yaml

from vlkit.cli.synth import data_arguments, imagenet_arguments, synthesize
from vlkit.cli.training import train_or_test
from vlkit.config import ConfigError, resolve_config
from vlkit.config.named_configs import UnknownPresetError, all_presets, expand, find_preset

log = logging.getLogger("vlkit")

USAGE = """usage:
  vlkit run with NAME... key=value...   train (or test_only=True: test) with presets and overrides
  vlkit presets [NAME]                  list the presets, or show what one sets
  vlkit data synth --out DIR            write the synthetic dataset and its tokenizer
  vlkit data tokenizer DATA_ROOT        train a WordPiece tokenizer on its texts (DATA_ROOT/tokenizer)
  vlkit data convert NAME --root RAW --out DIR   convert a raw dataset to Arrow tables (+ json formats)
  vlkit data check DIR                  report rows, missing / corrupt images, duplicates of the tables
  vlkit quickstart [--out DIR]          synthetic data + a short tiny VLC pre-training on CPU
  vlkit imagenet --data_path DIR ...    ImageNet-style ViT fine-tuning (main_finetune.py's arguments)
  vlkit viz elip --image IMG --text TEXT --checkpoint CKPT [--out PNG] [with NAME... key=value...]
                                        picture of the patches ELIP kept and merged at each stage
  vlkit viz retrieval|mae|align --model DIR ...   retrieval examples, MAE reconstructions, alignment map
  vlkit export SRC --out DIR [with NAME... key=value...]
                                        a model folder from a run directory or checkpoint
  vlkit predict DIR TASK ...            vqa / match / retrieve / fill-mask / nlvr2 / entailment / classify [--json]
  vlkit demo DIR [--port 7860]          a web page to try the model (binds to 127.0.0.1)
  vlkit checkpoint consolidate DIR OUT  a sharded (strategy=fsdp) checkpoint folder as one .ckpt file
"""


def processes_per_node(cfg: Any) -> int:
    """``num_gpus`` as a process count (a list of device ids counts its length)."""
    return len(cfg.num_gpus) if isinstance(cfg.num_gpus, (list, tuple)) else int(cfg.num_gpus)


def command_run(argv: Sequence[str]) -> int:
    from vlkit.utils import distributed

    cfg = resolve_config(argv)
    launched = distributed.launched_by_launcher()
    if cfg.num_nodes > 1 and not launched:
        raise ConfigError(
            f"num_nodes={cfg.num_nodes}: start one process per GPU on every node with torchrun "
            f"(torchrun --nnodes {cfg.num_nodes} --nproc-per-node {processes_per_node(cfg)} "
            "--rdzv-endpoint HOST:PORT -m vlkit run with ...) or srun"
        )
    if processes_per_node(cfg) > 1 and not launched:
        return distributed.launch_local(processes_per_node(cfg))
    result = train_or_test(cfg)
    if distributed.is_main():
        log.info("done: %s", {k: v for k, v in result.items() if k != "val"})
    return 0


def command_presets(argv: Sequence[str]) -> int:
    if argv:
        preset = find_preset(argv[0])
        print(f"# {preset.qualified}: {preset.doc}")
        print(yaml.safe_dump(expand(preset), sort_keys=False).rstrip())
        return 0
    for preset in all_presets().values():
        print(f"{preset.qualified:42s} {preset.doc}")
    return 0


def command_data(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlkit data")
    commands = parser.add_subparsers(dest="command", required=True)
    synth = commands.add_parser("synth", help="write the synthetic dataset (all Arrow files) and tokenizer")
    synth.add_argument("--out", required=True, help="output folder (becomes data_root)")
    synth.add_argument("--images", type=int, default=200, help="number of scenes (default 200)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    tokenizer = commands.add_parser("tokenizer", help="train a WordPiece tokenizer on a data root's texts")
    tokenizer.add_argument("data_root", help="folder of Arrow tables and / or json annotations")
    tokenizer.add_argument("--out", help="where to save it (default DATA_ROOT/tokenizer, used by runs on that root)")
    tokenizer.add_argument("--vocab-size", type=int, default=30522, help="largest vocabulary (default 30522)")
    from vlkit.cli import data_convert

    data_convert.add_subcommands(commands)
    args = parser.parse_args(argv)
    if args.command in ("convert", "check"):
        return data_convert.run(args)
    if args.command == "tokenizer":
        return command_data_tokenizer(args)
    info = synthesize(args.out, args.images, args.seed, args.image_size)
    print(f"wrote {len(info['files'])} Arrow files and a tokenizer to {args.out}; train with e.g.\n"
          f"  vlkit run with task_mlm_itm_mae tiny {data_arguments(args.out, info)}\n"
          f"and an ImageFolder tree; fine-tune a classifier on it with e.g.\n"
          f"  vlkit imagenet {imagenet_arguments(info)}")
    return 0


def command_data_tokenizer(args: argparse.Namespace) -> int:
    from vlkit.data.data_tokenizer import train_data_tokenizer

    try:
        info = train_data_tokenizer(args.data_root, args.out, args.vocab_size)
    except (OSError, ValueError) as err:
        print(f"vlkit data tokenizer: {err}", file=sys.stderr)
        return 2
    print(f"wrote a {info['vocab_size']}-token WordPiece tokenizer to {info['tokenizer']} from {info['texts']} "
          f"texts in {len(info['files'])} files; runs with data_root={args.data_root} use it (and its size as "
          "vocab_size) unless tokenizer= is given")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    handlers = {"run": command_run, "presets": command_presets, "data": command_data}
    if command == "quickstart":
        from vlkit.cli.quickstart import command_quickstart

        handlers["quickstart"] = command_quickstart
    if command == "imagenet":
        from vlkit.cli.imagenet import cli as command_imagenet

        handlers["imagenet"] = command_imagenet
    if command == "viz":
        from vlkit.cli.viz import command_viz

        handlers["viz"] = command_viz
    if command in ("export", "predict"):
        from vlkit.cli import model

        handlers.update(export=model.command_export, predict=model.command_predict)
    if command == "demo":
        from vlkit.cli.demo import command_demo

        handlers["demo"] = command_demo
    if command == "checkpoint":  # issue 21
        from vlkit.engine.dcp_checkpoint import command_checkpoint

        handlers["checkpoint"] = command_checkpoint
    if command not in handlers:
        print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return handlers[command](rest)
    except (ConfigError, UnknownPresetError) as err:
        print(f"vlkit: {err}", file=sys.stderr)
        return 2

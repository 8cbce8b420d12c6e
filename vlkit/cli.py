"""The ``vlkit`` command: ``run``, ``presets``, ``data synth|convert|check``, ``quickstart``, ``imagenet`` and ``viz``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

import yaml

from vlkit.config import ConfigError, resolve_config
from vlkit.config.named_configs import UnknownPresetError, all_presets, expand, find_preset

log = logging.getLogger("vlkit")

USAGE = """usage:
  vlkit run with NAME... key=value...   train (or test_only=True: test) with presets and overrides
  vlkit presets [NAME]                  list the presets, or show what one sets
  vlkit data synth --out DIR            write the synthetic dataset and its tokenizer
  vlkit data convert NAME --root RAW --out DIR   convert a raw dataset to Arrow tables (+ json formats)
  vlkit data check DIR                  report rows, missing / corrupt images, duplicates of the tables
  vlkit quickstart [--out DIR]          synthetic data + a short tiny VLC pre-training on CPU
  vlkit imagenet --data_path DIR ...    ImageNet-style ViT fine-tuning (main_finetune.py's arguments)
  vlkit viz elip --image IMG --text TEXT --checkpoint CKPT [--out PNG] [with NAME... key=value...]
                                        picture of the patches ELIP kept and merged at each stage
  vlkit checkpoint consolidate DIR OUT  a sharded (strategy=fsdp) checkpoint folder as one .ckpt file
"""


def processes_per_node(cfg: Any) -> int:
    """``num_gpus`` as a process count (a list of device ids counts its length)."""
    return len(cfg.num_gpus) if isinstance(cfg.num_gpus, (list, tuple)) else int(cfg.num_gpus)


def train_or_test(cfg: Any) -> dict[str, Any]:
    """Build the task and trainer for ``cfg`` and run ``fit`` (or ``test`` when ``test_only``)."""
    from vlkit.engine.trainer import Trainer
    from vlkit.tasks import build_task
    from vlkit.utils import distributed

    try:
        trainer = Trainer(cfg, build_task(cfg))
        return trainer.test() if cfg.test_only else trainer.fit()
    finally:
        distributed.destroy_distributed()


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
    from vlkit.data import convert_cli

    convert_cli.add_subcommands(commands)
    args = parser.parse_args(argv)
    if args.command in ("convert", "check"):
        return convert_cli.run(args)
    info = synthesize(args.out, args.images, args.seed, args.image_size)
    print(f"wrote {len(info['files'])} Arrow files and a tokenizer to {args.out}; train with e.g.\n"
          f"  vlkit run with task_mlm_itm_mae tiny {data_arguments(args.out, info)}\n"
          f"and an ImageFolder tree; fine-tune a classifier on it with e.g.\n"
          f"  vlkit imagenet {imagenet_arguments(info)}")
    return 0


def synthesize(out: str, images: int, seed: int, image_size: int) -> dict[str, Any]:
    from vlkit.data.synthetic import write_synthetic

    return write_synthetic(out, num_images=images, seed=seed, image_size=image_size, progress=True)


def data_arguments(data_root: str, info: dict[str, Any]) -> str:
    """The ``key=value`` words that point a run at a synthetic set."""
    return (f"data_root={data_root} tokenizer={info['tokenizer']} vocab_size={info['vocab_size']} "
            f"vqav2_label_size={info['vqav2_label_size']}")


def imagenet_arguments(info: dict[str, Any]) -> str:
    """``vlkit imagenet`` arguments for a short CPU run on a synthetic set's ImageFolder tree."""
    tree = info["imagefolder"]
    return (f"--data_path {tree['root']} --nb_classes {len(tree['classes'])} --model vit_tiny_patch16 "
            "--depth 2 --embed_dim 64 --num_heads 2 --patch_size 8 --input_size 32 --batch_size 32 "
            "--epochs 30 --warmup_epochs 3 --lr 2e-3 --device cpu --num_workers 2 "
            "--output_dir runs/imagenet_synth --log_dir runs/imagenet_synth")


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
        from vlkit.quickstart import command_quickstart

        handlers["quickstart"] = command_quickstart
    if command == "imagenet":
        from vlkit.imagenet.main import cli as command_imagenet

        handlers["imagenet"] = command_imagenet
    if command == "viz":
        from vlkit.viz.elip import command_viz

        handlers["viz"] = command_viz
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

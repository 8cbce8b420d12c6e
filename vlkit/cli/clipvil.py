"""CLIP-ViL's command lines (fact sheet clipvil.md §1): ``lxmert_pretrain.py`` and ``tasks/vqa.py``
flags, as ``python -m vlkit.cli.clipvil {pretrain,vqa} --flags... [PRESET... key=value...]``;
``scripts/pretrain.bash`` and ``scripts/finetune_vqa.bash`` launch them through torchrun.
``clip-pretrain`` (vlkit's own) trains a small CLIP for ``--clip_path`` (``vlkit.clipvil.contrastive``).

Every flag of the reference's ``param.py`` is accepted with its name and default and becomes a
vlkit config value on top of the ``clipvil`` preset (``reference_values``); the run goes through
vlkit's Trainer. Words after the flags are vlkit presets and ``key=value`` overrides, applied last.
Flags of the reference's other paths (BUTD features, ViT backbones, LMDB, visual pre-training
heads) are refused with the reason. Differences (docs/clipvil.md): the world size comes from
torchrun (multi-node works), evaluation uses every grid cell, padded cells are masked
(``--attend_padded_cells`` restores the reference), and with every vlkit checkpoint the reference's
files are written into ``--output`` (``reference_checkpoint_dir``): ``EpochNN_LXRT.pth`` (+ ``_AdamOptim``,
``_SGDOptim``, ``_Scheduler``; ``EpochNNStepS`` with ``--save_step``) when pre-training,
``LAST.pth`` and, on improvement, ``BEST.pth`` for VQA.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from vlkit.config import ConfigError, loss_names, resolve_config
from vlkit.data.lxmert import AnswerTable, read_answer_list
from vlkit.models.backbones.clip_resnet import CLIP_RESNETS, resnet_shape

log = logging.getLogger("vlkit")

OPTIMIZERS = {"bert": "adamw", "adamw": "adamw", "adam": "adam", "sgd": "sgd"}
REFUSED = {
    "taskObjPredict": "LXMERT's object/attribute/feature heads run on BUTD boxes; no CLIP-ViL recipe uses them",
    "use_h5_file": "the BUTD feature reader (its module is not in the reference either)",
    "drop_boxes": "BUTD boxes do not exist on the CLIP path",
    "vilt_style": "an experimental CLIP-ViT path that no recipe uses",
    "use_vit": "a ViT backbone from a package the reference does not ship",
    "reset_pos_embedding": "CLIP ViT-B/32 only; vlkit's clipvil family builds CLIP ResNets",
    "use_max_pooling": "unused by every recipe",
    "use_lmdb": "the reference asserts it off",
    "multiGPU": "nn.DataParallel; launch with torchrun (the scripts do)",
    "mceLoss": "GQA's loss; vlkit runs CLIP-ViL's VQA task only",
}


def _flag(parser: argparse.ArgumentParser, name: str, dest: str | None = None, **kwargs: Any) -> None:
    parser.add_argument(f"--{name}", dest=dest or name, **kwargs)


def build_parser(script: str) -> argparse.ArgumentParser:
    """The reference's ``param.py`` flags (names, defaults), plus vlkit's few additions."""
    parser = argparse.ArgumentParser(prog=script, description=f"vlkit's CLIP-ViL {script}")
    for name, default in (("train", "train"), ("valid", "valid"), ("test", None), ("optim", "bert"),
                          ("output", "snap/test"), ("load", None), ("visualLosses", "obj,attr,feat"),
                          ("qaSets", None), ("clip_model_name", "ViT-B/32"), ("fp16_opt_level", "O1"),
                          ("limit_source", ""), ("schedule", "2,5")):
        _flag(parser, name, default=default)
    _flag(parser, "loadLXMERT", "load_lxmert", default=None)
    _flag(parser, "loadLXMERTQA", "load_lxmert_qa", default=None)
    for name, default in (("batchSize", 256), ("epochs", 10), ("seed", 9595), ("llayers", 9), ("xlayers", 5),
                          ("rlayers", 5), ("numWorkers", 0), ("report_step", 200), ("local_rank", -1),
                          ("nodes", 1), ("aspect_ratio_group_factor", 0), ("gradient_accumulation_steps", 1),
                          ("image_size_min", 384), ("image_size_max", 640), ("loss_scale", 1), ("save_step", -1),
                          ("sub_feat_num", 36), ("start_epoch", 0), ("pos_num", 25)):
        _flag(parser, name, type=int, default=default)
    for name, default in (("lr", 1e-4), ("dropout", 0.1), ("wordMaskRate", 0.15), ("objMaskRate", 0.15),
                          ("weight_decay", 0.01), ("adam_epsilon", 1e-6), ("max_grad_norm", 1.0),
                          ("warmup_ratio", 0.1), ("sgd_lr", 0.001), ("sgd_momentum", 0.0),
                          ("sgd_weight_decay", 0.0004)):
        _flag(parser, name, type=float, default=default)
    for name in ("fast", "tiny", "tqdm", "fromScratch", "taskMatched", "taskMaskLM", "taskObjPredict", "taskQA",
                 "input_raw_images", "use_clip", "visualbert_style", "fp16", "distributed", "freeze_clip",
                 "vqa_style_transform", "use_adam_for_visual", "use_h5_file", "drop_boxes", "skip_training",
                 "dynamic_padding", "vilt_style", "add_zero_padding", "use_vit", "reset_pos_embedding",
                 "sub_sampling", "use_separate_optimizer_for_visual", "compress_data", "use_lmdb",
                 "use_positional_embedding", "use_max_pooling", "not_load_scheduler", "pad_square",
                 "not_load_adam_optimizer", "separate_image", "multiGPU", "mceLoss"):
        _flag(parser, name, action="store_true")
    vlkit = parser.add_argument_group("vlkit additions")
    vlkit.add_argument("--data_root", default="data", help="the reference's data/ folder (lxmert/, vqa/, mscoco/, ...)")
    vlkit.add_argument("--tokenizer", default="bert-base-uncased", help="tokenizer name or local folder")
    vlkit.add_argument("--clip_path", default="", help="local OpenAI CLIP file (e.g. RN50.pt) for the ResNet")
    vlkit.add_argument("--device", default="auto")
    vlkit.add_argument("--bf16", action="store_true", help="bf16 autocast instead of fp16")
    vlkit.add_argument("--attend_padded_cells", action="store_true",
                       help="attend to grid cells that cover only padding, as the reference (default: masked)")
    parser.add_argument("overrides", nargs="*", help="vlkit presets and key=value overrides, applied last")
    return parser


def _check_flags(args: argparse.Namespace) -> None:
    for name, reason in REFUSED.items():
        if getattr(args, name):
            raise ConfigError(f"--{name} is not supported: {reason}")
    if not (args.use_clip and args.input_raw_images):
        raise ConfigError("vlkit's CLIP-ViL runs the CLIP path only: pass --use_clip --input_raw_images (the scripts do)")
    if args.start_epoch:
        raise ConfigError("--start_epoch: resume the run instead (key=value override resume_from=<run>/checkpoints/"
                          "last.ckpt restores epoch, step, optimizers and data order)")
    if args.optim not in OPTIMIZERS and "bert" not in args.optim:
        raise ConfigError(f"--optim {args.optim}: vlkit offers {sorted(OPTIMIZERS)} (the distributed reference "
                          "always used AdamW)")
    if args.clip_model_name not in CLIP_RESNETS:
        raise ConfigError(f"--clip_model_name {args.clip_model_name}: vlkit's CLIP-ViL builds CLIP ResNets "
                          f"({', '.join(CLIP_RESNETS)}); the published scripts pass RN50 or RN50x4")
    if args.fromScratch and (args.load or args.load_lxmert or args.load_lxmert_qa):
        raise ConfigError("--fromScratch re-initialises the model, which contradicts --load / --loadLXMERT*")


def _output(path: str) -> dict[str, str]:
    """vlkit's run folders under ``--output`` (``<output>/version_N``), the reference's files in it."""
    out = Path(path)
    return {"log_dir": str(out.parent), "run_name": out.name, "reference_checkpoint_dir": str(out)}


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def common_values(args: argparse.Namespace) -> dict[str, Any]:
    """Config values from the flags both scripts share."""
    _check_flags(args)
    two_stream = not args.visualbert_style
    if two_stream and args.xlayers < 1:
        raise ConfigError("without --visualbert_style the model is LXMERT's two-stream one and needs --xlayers >= 1")
    if args.use_separate_optimizer_for_visual:
        visual = "adamw" if args.use_adam_for_visual else "sgd"
    else:
        visual = ""
    precision = "bf16" if args.bf16 else (16 if args.fp16 else 32)
    values = {
        "model": "clipvil", "data_root": args.data_root, "image_root": args.data_root, "tokenizer": args.tokenizer,
        "device": args.device, "seed": args.seed, "per_gpu_batchsize": args.batchSize,
        "batch_size": args.batchSize * _world_size() * args.gradient_accumulation_steps,
        "learning_rate": args.lr, "max_epoch": args.epochs, "max_steps": None,
        "optim_type": OPTIMIZERS.get(args.optim, "adamw"), "weight_decay": args.weight_decay,
        "adam_eps": args.adam_epsilon, "gradient_clip_val": args.max_grad_norm, "warmup_steps": args.warmup_ratio,
        "num_workers": args.numWorkers, "progress_bar": args.tqdm,
        "log_every_n_steps": max(1, args.report_step // args.gradient_accumulation_steps),
        "clip_model_name": args.clip_model_name, "clip_path": args.clip_path, "clip_freeze": args.freeze_clip,
        "image_size_min": args.image_size_min, "image_size_max": args.image_size_max,
        "dynamic_padding": args.dynamic_padding, "aspect_ratio_group_factor": args.aspect_ratio_group_factor,
        "sub_sampling": args.sub_sampling, "sub_feat_num": args.sub_feat_num,
        "use_positional_embedding": args.use_positional_embedding, "pos_num": args.pos_num,
        "attend_padded_cells": args.attend_padded_cells, "num_layers": args.llayers,
        "cross_layers": args.xlayers if two_stream else 0, "relation_layers": args.rlayers if two_stream else 0,
        "visual_optimizer": visual, "visual_learning_rate": args.sgd_lr, "visual_momentum": args.sgd_momentum,
        "visual_weight_decay": args.sgd_weight_decay,
        "visual_lr_milestones": [int(m) for m in args.schedule.split(",") if m.strip()],
        "precision": precision, "qa_sets": [s for s in (args.qaSets or "").split(",") if s],
        "qa_answers": "lxmert/all_ans.json",
        **_output(args.output),
    }
    if args.save_step > 0:
        values["val_check_interval"] = args.save_step
    return values


def _splits(names: str, folder: str) -> list[str]:
    return [f"{folder}/{name}.json" for name in names.split(",") if name]


def pretrain_values(args: argparse.Namespace) -> dict[str, Any]:
    """``lxmert_pretrain.py``'s flags as config values (``--load`` restores the side files too)."""
    values = common_values(args)
    if args.objMaskRate > 0:
        raise ConfigError(f"--objMaskRate {args.objMaskRate}: visual feature masking is not in vlkit's CLIP-ViL; "
                          "every published script passes --objMaskRate 0.0")
    qa_size = 0
    if args.taskQA:
        table = AnswerTable.from_file(os.path.join(args.data_root, "lxmert", "all_ans.json"), values["qa_sets"])
        qa_size = len(table.answers)
    values.update({
        "task": "clipvil_pretrain", "loss_names": loss_names(mlm=float(args.taskMaskLM), itm=float(args.taskMatched)),
        "mlm_prob": args.wordMaskRate, "train_file": _splits(args.train, "lxmert"),
        "val_file": _splits(args.valid, "lxmert"), "qa_label_size": qa_size,
        "lxmert_limit_sources": [s for s in args.limit_source.split(",") if s],
        "fast_dev_run": 4 if args.skip_training else False,
    })
    if args.load:
        values.update(_load_with_side_files(args))
    elif args.load_lxmert:
        values["load_path"] = f"{args.load_lxmert}_LXRT.pth"
    return values


def _load_with_side_files(args: argparse.Namespace) -> dict[str, Any]:
    """``--load P``: ``P_LXRT.pth`` and, when present, ``P_LXRT_SGDOptim.pth`` (always),
    ``_AdamOptim.pth`` (unless ``--not_load_adam_optimizer``), ``_Scheduler.pth`` (unless
    ``--not_load_scheduler``), as the reference."""
    def side(name: str, wanted: bool = True) -> str:
        path = f"{args.load}_LXRT_{name}.pth"
        return path if wanted and os.path.isfile(path) else ""

    adam = side("AdamOptim", not args.not_load_adam_optimizer)
    sgd = side("SGDOptim") if args.use_separate_optimizer_for_visual else ""
    return {"load_path": f"{args.load}_LXRT.pth", "load_optimizer_states": [adam, sgd],
            "load_scheduler_states": [side("Scheduler", not args.not_load_scheduler)]}


def vqa_values(args: argparse.Namespace) -> dict[str, Any]:
    """``tasks/vqa.py``'s flags as config values."""
    values = common_values(args)
    if args.skip_training and not args.test:
        raise ConfigError("--skip_training without --test does nothing; evaluate with --test minival")
    answers = read_answer_list(os.path.join(args.data_root, "vqa", "trainval_label2ans.json"))
    values.update({
        "task": "clipvil_vqa", "loss_names": loss_names(vqa=1), "is_pretrain": False,
        "train_file": _splits(args.train, "vqa"), "val_file": _splits(args.valid, "vqa"),
        "answer_list": "vqa/trainval_label2ans.json", "vqav2_label_size": len(answers),
        "vqa_loss_scale": 0.0 if args.loss_scale == 1 else float(args.loss_scale),
    })
    if args.test:
        split = "test" if "test" in args.test else "minival"
        values.update({"test_only": True, "test_file": [f"vqa/{split}.json"]})
    if args.load:
        values["load_path"] = f"{args.load}.pth"
    elif args.load_lxmert_qa:
        values.update({"load_path": f"{args.load_lxmert_qa}_LXRT.pth", "vqa_head_from_qa": True})
    elif args.load_lxmert:
        values["load_path"] = f"{args.load_lxmert}_LXRT.pth"
    return values


def run(script: str, argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``argv`` for ``script`` (``pretrain`` or ``vqa``), train or test, export; the result."""
    from vlkit.cli.training import train_or_test

    args = build_parser(script).parse_intermixed_args(argv)
    values = pretrain_values(args) if script == "pretrain" else vqa_values(args)
    cfg = resolve_config(args.overrides, values, f"{script} flags", base=["clipvil"])
    return train_or_test(cfg)


def clip_pretrain(argv: Sequence[str]) -> dict[str, float]:
    """``clip-pretrain``: the contrastive warm-up of a CLIP whose ResNet is the one the presets and
    overrides after the flags build (``clip_model_name`` / ``clip_layers`` / ``clip_width``, canvas
    ``image_size_min`` / ``_max``: pass the CLIP-ViL run's own, e.g. ``clipvil_tiny``)."""
    from vlkit.clipvil.contrastive import ContrastiveConfig, train_contrastive

    parser = argparse.ArgumentParser(prog="clip-pretrain", description="CLIP-style warm-up for --clip_path")
    parser.add_argument("--data_root", required=True, help="CLIP-ViL's data folder (holding lxmert/)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer name or local folder")
    parser.add_argument("--output", required=True, help="the CLIP file to write (OpenAI key names)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batchSize", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tqdm", action="store_true", help="show a progress bar")
    parser.add_argument("overrides", nargs="*", help="vlkit presets and key=value overrides (the model's ResNet)")
    args = parser.parse_intermixed_args(argv)
    cfg = resolve_config(args.overrides, {}, "clip-pretrain flags", base=["clipvil"])
    layers, width = resnet_shape(cfg.clip_model_name)
    return train_contrastive(ContrastiveConfig(
        args.data_root, args.tokenizer, args.output, layers=list(cfg.clip_layers) or layers,
        width=cfg.clip_width or width, image_size_min=cfg.image_size_min, image_size_max=cfg.image_size_max,
        steps=args.steps, batch_size=args.batchSize, lr=args.lr, seed=args.seed, progress_bar=args.tqdm))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vlkit.cli.clipvil {pretrain,vqa,clip-pretrain} --flags...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not argv or argv[0] not in ("pretrain", "vqa", "clip-pretrain"):
        print("usage: python -m vlkit.cli.clipvil {pretrain,vqa,clip-pretrain} --flags... [PRESET... key=value...]",
              file=sys.stderr)
        return 2
    try:
        if argv[0] == "clip-pretrain":
            try:
                log.info("done: %s", clip_pretrain(argv[1:]))
            except (ValueError, OSError) as err:
                print(f"clipvil clip-pretrain: {err}", file=sys.stderr)
                return 2
            return 0
        result = run(argv[0], argv[1:])
    except ConfigError as err:
        print(f"clipvil {argv[0]}: {err}", file=sys.stderr)
        return 2
    log.info("done: %s", {k: v for k, v in result.items() if k != "val"})
    return 0


if __name__ == "__main__":
    sys.exit(main())

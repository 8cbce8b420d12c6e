"""The ALBEF / GRIT-VLP command lines (fact sheet grit_albef.md §1): ``Pretrain.py``,
``Retrieval.py``, ``Pretrain_nlvr.py``, ``NLVR.py`` and ``VQA.py`` with ``--config``, ``--output_dir``,
``--checkpoint``, ``--evaluate``, ...

A reference yaml file is translated key by key into vlkit's typed config on top of the
``grit.*`` presets (``GRIT_KEYS``), so ``--config`` and ``vlkit run with ...`` run the same code;
a yaml key vlkit does not know is an error naming it. Words after the options are vlkit presets
and ``key=value`` overrides, applied after the yaml (``Pretrain.py --config configs/Pretrain.yaml tiny
max_steps=10``). Boolean flags take real booleans: ``--resume false`` is False (the reference's
``type=bool`` made any non-empty string True).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from vlkit.config import ConfigError, resolve_config

log = logging.getLogger("vlkit")

WARMUP_ITERATIONS_PER_EPOCH = 100
"""ALBEF's ``warmup_epochs`` count units of 100 iterations (fact sheet §6)."""
IGNORED_KEYS = {
    "bert_config": "read separately (text encoder shape)",
    "vision_width": "must equal the BERT width",
    "decay_rate": "timm step decay, unused by the cosine schedule",
    "cooldown_epochs": "0 in every reference config",
    "warmup_lr": "vlkit warms up linearly from 0",
    "sched": "cosine in every reference config",
    "batch_size_test": "evaluation uses per_gpu_batchsize",
    "eval_ema": "never read by the reference",
}


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no), case-insensitive; anything else is an error."""
    lowered = str(text).lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _bert_values(path: str, config_dir: Path) -> dict[str, Any]:
    """Text-encoder shape from ALBEF's ``config_bert.json``."""
    # as given, then relative to the config's folder or any folder above it (the repository root)
    candidates = [Path(path), *(folder / path for folder in (config_dir, *config_dir.parents)),
                  config_dir / Path(path).name]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ConfigError(f"bert_config={path!r}: no such file (looked in {[str(p) for p in candidates]})")
    bert = json.loads(found.read_text())
    if bert.get("encoder_width", bert["hidden_size"]) != bert["hidden_size"]:
        raise ConfigError(f"{found}: encoder_width must equal hidden_size (one width for both towers)")
    return {
        "hidden_size": bert["hidden_size"], "num_layers": bert["num_hidden_layers"],
        "num_heads": bert["num_attention_heads"], "mlp_ratio": bert["intermediate_size"] / bert["hidden_size"],
        "vocab_size": bert["vocab_size"], "fusion_layer": bert["fusion_layer"],
        "max_position_embeddings": bert["max_position_embeddings"], "drop_rate": bert["hidden_dropout_prob"],
    }


def _files(value: Any) -> list:
    return [value] if isinstance(value, str) else list(value)


def _schedule(value: dict, yaml_values: dict) -> dict[str, Any]:
    out = {"learning_rate": float(value["lr"]), "end_lr": float(value.get("min_lr", 0.0)),
           "warmup_steps": int(value["warmup_epochs"]) * WARMUP_ITERATIONS_PER_EPOCH}
    if "train_epochs" in yaml_values:  # GRIT runs train_epochs of a longer cosine (§3.7)
        out["lr_schedule_epochs"] = int(value["epochs"])
    else:
        out["max_epoch"] = int(value["epochs"])
    return out


def _answer_eos(value: Any) -> dict:
    """ALBEF appends ``eos`` to every VQA answer; vlkit's tokenizer ends every answer with its [SEP]."""
    if value != "[SEP]":
        raise ConfigError(f"eos={value!r}: vlkit's answers end with the tokenizer's [SEP]; only eos: '[SEP]' "
                          "(the reference configs' value) is supported")
    return {}


def _optimizer(value: dict, yaml_values: dict) -> dict[str, Any]:
    if str(value.get("opt", "adamW")).lower() != "adamw":
        raise ConfigError(f"optimizer.opt={value['opt']!r}: only adamW is used by the reference configs")
    return {"optim_type": "adamw", "weight_decay": float(value["weight_decay"])}


def _uses_momentum(yaml_values: dict) -> bool:
    """ALBEF's configs with ``momentum`` keep a momentum model, unless ``use_momentum`` is False (GRIT)."""
    return "momentum" in yaml_values and bool(yaml_values.get("use_momentum", True))


def _queue_size(value: Any, yaml_values: dict) -> dict:
    """GRIT pre-training's collection queue (with ``search_space``), else ALBEF's ITC queue."""
    if "search_space" in yaml_values:
        return {"grit_queue_size": int(value)}
    return {"itc_queue_size": int(value) if _uses_momentum(yaml_values) else 0}


def _alpha(value: Any, yaml_values: dict) -> dict:
    """ALBEF's distillation weight; 0 when ``distill`` is False (GRIT)."""
    alpha = float(value) if yaml_values.get("distill", True) else 0.0
    if alpha > 0 and not _uses_momentum(yaml_values):
        raise ConfigError(
            f"alpha={value} with distill: ALBEF's distillation in fine-tuning without a momentum model "
            "(NLVR, VQA, VE) is not in vlkit; set distill: False (GRIT's configs do)"
        )
    return {"distill_alpha": alpha}


GRIT_KEYS: dict[str, Callable[[Any, dict], dict]] = {
    "train_file": lambda v, y: {"train_file": _files(v)},
    "val_file": lambda v, y: {"val_file": _files(v)},
    "test_file": lambda v, y: {"test_file": _files(v)},
    "image_root": lambda v, y: {"image_root": v},
    "image_res": lambda v, y: {"image_size": int(v)},
    "embed_dim": lambda v, y: {"itc_embed_dim": int(v)},
    "batch_size": lambda v, y: {"per_gpu_batchsize": int(v)},
    "batch_size_train": lambda v, y: {"per_gpu_batchsize": int(v)},
    "temp": lambda v, y: {"itc_temperature": float(v)},
    "mlm_probability": lambda v, y: {"mlm_prob": float(v)},
    "queue_size": _queue_size,
    "momentum": lambda v, y: {"momentum": float(v) if _uses_momentum(y) else 0.0},
    "use_momentum": lambda v, y: {} if v else {"momentum": 0.0, "itc_queue_size": 0},
    "alpha": _alpha,
    "distill": lambda v, y: {} if v else {"distill_alpha": 0.0},
    "warm_up": lambda v, y: {"distill_warmup": bool(v)},
    "search_space": lambda v, y: {"grit_search_space": int(v), "train_sampler": "grit"},
    "train_epochs": lambda v, y: {"max_epoch": int(v)},
    "k_test": lambda v, y: {"k_test": int(v)},
    "answer_list": lambda v, y: {"answer_list": v},
    "vqa_root": lambda v, y: {"vqa_root": v},
    "vg_root": lambda v, y: {"vg_root": v},
    "eos": lambda v, y: _answer_eos(v),
    "optimizer": _optimizer,
    "schedular": _schedule,
}


def yaml_values(path: str) -> dict[str, Any]:
    """A reference yaml file as vlkit config values (see ``GRIT_KEYS``)."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config {path!r}: no such file")
    raw = yaml.safe_load(Path(path).read_text()) or {}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in IGNORED_KEYS:
            continue
        if key not in GRIT_KEYS:
            raise ConfigError(
                f"{path}: key {key!r} is not one vlkit reads from an ALBEF/GRIT config (known: "
                f"{sorted([*GRIT_KEYS, *IGNORED_KEYS])}); set vlkit keys as key=value words instead"
            )
        values.update(GRIT_KEYS[key](value, raw))
    if "bert_config" in raw:
        values.update(_bert_values(raw["bert_config"], Path(path).resolve().parent))
    values["batch_size"] = values.get("per_gpu_batchsize", 1) * int(os.environ.get("WORLD_SIZE", 1))
    return values


def _parser(script: str, default_config: str, default_output: str, seed: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=script, description=f"vlkit's {script} (ALBEF/GRIT command line)")
    parser.add_argument("--config", default=default_config)
    parser.add_argument("--output_dir", default=default_output)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--text_encoder", default="bert-base-uncased",
                        help="tokenizer name or local directory (HF_HUB_OFFLINE: a local directory)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--world_size", type=int, default=1, help="taken from torchrun's environment")
    parser.add_argument("--dist_url", default="env://", help="taken from torchrun's environment")
    parser.add_argument("--distributed", type=parse_bool, default=True)
    parser.add_argument("overrides", nargs="*", help="vlkit presets and key=value overrides")
    return parser


def _run(preset: str, words: list[str], values: dict[str, Any], source: str) -> int:
    from vlkit.cli.training import train_or_test

    cfg = resolve_config(words, values, source, base=[preset])
    result = train_or_test(cfg)
    log.info("done: %s", {k: v for k, v in result.items() if k != "val"})
    return 0


def _common_values(args: argparse.Namespace, script: str) -> dict[str, Any]:
    out = Path(args.output_dir)
    return {"log_dir": str(out.parent), "run_name": out.name or script, "tokenizer": args.text_encoder,
            "device": args.device, "seed": args.seed, **yaml_values(args.config)}


def pretrain(argv: Sequence[str]) -> int:
    """``Pretrain.py``: GRIT-VLP (or ALBEF without momentum) pre-training on the json files."""
    parser = _parser("Pretrain.py", "./configs/Pretrain.yaml", "Pretrain/", seed=42)
    parser.add_argument("--resume", type=parse_bool, default=False)
    parser.add_argument("--index_warmstart", type=parse_bool, default=False)
    parser.add_argument("--mini_batch_shuffle_across_gpu", type=parse_bool, default=False,
                        help="vlkit always shuffles mini-batches across GPUs (every example every epoch)")
    args = parser.parse_args(argv)
    if args.index_warmstart:
        raise ConfigError("--index_warmstart: resume the run that produced the order instead (--resume "
                          "true --checkpoint .../last.ckpt carries GRIT's order in the checkpoint)")
    values = {**_common_values(args, "Pretrain"), "datasets": ["json_pretrain"]}
    if args.checkpoint:
        values["resume_from" if args.resume else "load_path"] = args.checkpoint
    return _run("grit_pretrain", args.overrides, values, args.config)


def retrieval(argv: Sequence[str]) -> int:
    """``Retrieval.py``: ALBEF's retrieval fine-tuning (ITC with same-image positives and the
    momentum queue, ITM with sampled negatives) and evaluation (ITC top ``k_test`` re-ranked by
    the ITM logit); ``--evaluate`` tests only."""
    parser = _parser("Retrieval.py", "./configs/Retrieval_flickr.yaml", "output/Retrieval_flickr", seed=0)
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--copy_init", type=parse_bool, default=False,
                        help="accepted for compatibility: vlkit always starts the momentum model from the "
                             "loaded weights (GRIT's started from random ones without this flag)")
    args = parser.parse_args(argv)
    values = {**_common_values(args, "Retrieval"), "datasets": ["json_retrieval"],
              "test_only": args.evaluate, "load_path": args.checkpoint}
    return _run("grit_retrieval", args.overrides, values, args.config)


def _paired_encoder(values: dict[str, Any]) -> dict[str, Any]:
    """ALBEF's NLVR2 encoder from ``config_bert.json``'s shape: each fusion layer becomes a pair
    (12 layers, fusion from 6 → 18), the ViT keeps BERT's depth (12)."""
    if "num_layers" not in values:  # no bert_config: the preset's 18 / 12 stand
        return {}
    layers, fusion = values["num_layers"], values["fusion_layer"]
    return {"pair_fusion": True, "vision_layers": layers, "num_layers": fusion + 2 * (layers - fusion)}


def nlvr_pretrain(argv: Sequence[str]) -> int:
    """``Pretrain_nlvr.py``: ALBEF's text-assignment pre-training of the paired NLVR2 encoder on the
    pre-training json files; a 12-layer ``--checkpoint`` fills both layers of each fusion pair."""
    parser = _parser("Pretrain_nlvr.py", "./configs/NLVR_pretrain.yaml", "output/NLVR_pretrain", seed=0)
    args = parser.parse_args(argv)
    values = {**_common_values(args, "NLVR_pretrain"), "datasets": ["json_pretrain"], "load_path": args.checkpoint}
    values.update(_paired_encoder(values))
    return _run("grit_nlvr_pretrain", args.overrides, values, args.config)


def nlvr(argv: Sequence[str]) -> int:
    """``NLVR.py``: NLVR2 fine-tuning of the paired encoder (``--checkpoint``: the text-assignment
    one, or a 12-layer one spread onto the pairs). As ALBEF evaluates dev and test every epoch,
    validation (and ``--evaluate``, a vlkit addition: test only) reads ``val_file`` and
    ``test_file`` together and reports ``dev_accuracy`` and ``test_accuracy``; dev selects."""
    parser = _parser("NLVR.py", "./configs/NLVR.yaml", "output/NLVR", seed=0)
    parser.add_argument("--evaluate", action="store_true",
                        help="vlkit addition: evaluate --checkpoint on dev and test without training")
    args = parser.parse_args(argv)
    values = {**_common_values(args, "NLVR"), "datasets": ["json_nlvr"], "test_only": args.evaluate,
              "load_path": args.checkpoint}
    values.update(_paired_encoder(values))
    evaluated = [*_files(values.get("val_file", [])), *_files(values.get("test_file", []))]
    if evaluated:
        values["val_file"] = values["test_file"] = evaluated
    return _run("grit_nlvr", args.overrides, values, args.config)


def vqa(argv: Sequence[str]) -> int:
    """``VQA.py``: ALBEF's VQA fine-tuning of the answer decoder (a pre-training ``--checkpoint``
    fills it from its fusion layers and MLM head) on ``train_file``, then, as the reference, one
    evaluation of the last checkpoint on ``test_file``: a run of its own beside the training run
    (``<output_dir>/version_K``), whose ``result/vqa_result.json`` holds every test question once.
    ``--evaluate`` runs only that evaluation, of ``--checkpoint``."""
    from vlkit.cli.training import train_or_test

    parser = _parser("VQA.py", "./configs/VQA.yaml", "output/vqa", seed=0)
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--text_decoder", default="bert-base-uncased",
                        help="accepted for compatibility: the decoder starts from --checkpoint (as VQA.py once "
                             "a checkpoint is loaded) and shares --text_encoder's tokenizer")
    args = parser.parse_args(argv)
    values = {**_common_values(args, "vqa"), "datasets": ["json_vqa"], "test_only": args.evaluate,
              "load_path": args.checkpoint}
    result = train_or_test(resolve_config(args.overrides, values, args.config, base=["grit_vqa"]))
    if not args.evaluate:
        if not result["last_checkpoint"]:
            raise ConfigError("the training run wrote no checkpoint (fast_dev_run?); nothing to evaluate")
        values.update(test_only=True, load_path=result["last_checkpoint"])
        result = train_or_test(resolve_config(args.overrides, values, args.config, base=["grit_vqa"]))
    log.info("done: %s", result)
    return 0


def main(script: str, argv: Sequence[str]) -> int:
    """Run ``script`` (``Pretrain.py``, ``Retrieval.py``, ``Pretrain_nlvr.py``, ``NLVR.py`` or
    ``VQA.py``) with ``argv``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    commands = {"Pretrain.py": pretrain, "Retrieval.py": retrieval,
                "Pretrain_nlvr.py": nlvr_pretrain, "NLVR.py": nlvr, "VQA.py": vqa}
    try:
        return commands[script](argv)
    except ConfigError as err:
        print(f"{script}: {err}")
        return 2

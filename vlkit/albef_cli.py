"""The ALBEF / GRIT-VLP command lines (fact sheet grit_albef.md §1): ``Pretrain.py`` and
``Retrieval.py`` with ``--config``, ``--output_dir``, ``--checkpoint``, ``--evaluate``, ...

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
    "min_lr": "vlkit's cosine decays to 0",
    "sched": "cosine in every reference config",
    "batch_size_test": "evaluation uses per_gpu_batchsize",
    "warm_up": "alpha warm-up of distillation, which GRIT switches off",
    "eval_ema": "never read by the reference",
    "momentum": "EMA rate of the momentum encoder, which vlkit does not have (see queue_size)",
    "use_momentum": "see queue_size",
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
    candidates = [Path(path), config_dir.parent / path, config_dir / Path(path).name]
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
    out = {"learning_rate": float(value["lr"]),
           "warmup_steps": int(value["warmup_epochs"]) * WARMUP_ITERATIONS_PER_EPOCH}
    if "train_epochs" not in yaml_values:  # GRIT runs train_epochs of a longer cosine (§3.7)
        out["max_epoch"] = int(value["epochs"])
    return out


def _optimizer(value: dict, yaml_values: dict) -> dict[str, Any]:
    if str(value.get("opt", "adamW")).lower() != "adamw":
        raise ConfigError(f"optimizer.opt={value['opt']!r}: only adamW is used by the reference configs")
    return {"optim_type": "adamw", "weight_decay": float(value["weight_decay"])}


def _distillation(key: str) -> Callable[[Any, dict], dict]:
    """ALBEF's distillation (``alpha`` > 0, ``distill``) is refused; GRIT sets it off."""
    def check(value: Any, yaml_values: dict) -> dict:
        if value:
            raise ConfigError(
                f"{key}={value!r}: ALBEF's momentum distillation is not in vlkit yet (GRIT-VLP trains "
                "without it: alpha 0, distill False); use GRIT's configs (configs/*.yaml) or set it off"
            )
        return {}
    return check


def _momentum_queue(value: Any, yaml_values: dict) -> dict:
    """GRIT's retrieval configs keep a momentum encoder only to fill a feature queue (§3.8)."""
    if "search_space" not in yaml_values:
        log.warning("queue_size=%s: vlkit has no momentum feature queue; ITC takes its negatives from "
                    "the batches of all ranks", value)
    return {}


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
    "queue_size": lambda v, y: {"grit_queue_size": int(v)} if "search_space" in y else _momentum_queue(v, y),
    "search_space": lambda v, y: {"grit_search_space": int(v), "train_sampler": "grit"},
    "train_epochs": lambda v, y: {"max_epoch": int(v)},
    "k_test": lambda v, y: {"k_test": int(v)},
    "optimizer": _optimizer,
    "schedular": _schedule,
    "alpha": _distillation("alpha"),
    "distill": _distillation("distill"),
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
    from vlkit.cli import train_or_test

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
    """``Retrieval.py``: retrieval fine-tuning (ITC + rank head from ITM) and ALBEF's evaluation
    (ITC top ``k_test``, re-ranked by the cross-encoder); ``--evaluate`` tests only."""
    parser = _parser("Retrieval.py", "./configs/Retrieval_flickr.yaml", "output/Retrieval_flickr", seed=0)
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--copy_init", type=parse_bool, default=False,
                        help="no momentum encoder in vlkit: nothing to copy")
    args = parser.parse_args(argv)
    values = {**_common_values(args, "Retrieval"), "datasets": ["json_retrieval"],
              "test_only": args.evaluate, "load_path": args.checkpoint}
    return _run("grit_retrieval", args.overrides, values, args.config)


def main(script: str, argv: Sequence[str]) -> int:
    """Run ``script`` (``Pretrain.py`` or ``Retrieval.py``) with ``argv``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    commands = {"Pretrain.py": pretrain, "Retrieval.py": retrieval}
    try:
        return commands[script](argv)
    except ConfigError as err:
        print(f"{script}: {err}")
        return 2

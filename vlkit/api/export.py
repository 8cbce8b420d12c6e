"""``vlkit export``: a run directory, a vlkit ``.ckpt``, a sharded checkpoint folder
(``strategy=fsdp``, consolidated into a temporary file first) or any checkpoint vlkit loads (with
the presets and ``key=value`` words that describe its model) into a model folder (``folder.py``)."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vlkit.api.card import model_card
from vlkit.api.classifier import export_classifier, is_classifier_checkpoint
from vlkit.api.folder import RUN_FOLDER, folder_config, is_model_folder, write_model_folder
from vlkit.config import resolve_config
from vlkit.data.tokenizer import load_tokenizer
from vlkit.engine.dcp_checkpoint import consolidate, is_sharded_checkpoint
from vlkit.eval.metrics import file_sha256
from vlkit.models.build import build_model
from vlkit.models.checkpoints import LoadReport, apply_checkpoint, detect_format, read_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("best", "last")
"""A run's checkpoints, in order of preference: ``checkpoints/NAME.ckpt`` (ddp) or ``checkpoints/NAME/`` (fsdp)."""
ANSWER_HEADS = ("vqa_classifier", "text_decoder")


@dataclass
class Source:
    """What an export reads: the resolved config, the checkpoint (file or sharded folder) and the run's metrics."""

    cfg: DictConfig
    checkpoint: str
    metrics: dict[str, Any] = field(default_factory=dict)


def _find_run_checkpoint(run_dir: Path) -> Path | None:
    """The run's best (else last) checkpoint file or sharded folder; None when it has neither."""
    for name in CHECKPOINT_NAMES:
        for path in (run_dir / "checkpoints" / f"{name}.ckpt", run_dir / "checkpoints" / name):
            if path.is_file() or is_sharded_checkpoint(path):
                return path
    return None


def _run_checkpoint(run_dir: Path) -> Path:
    path = _find_run_checkpoint(run_dir)
    if path is None:
        raise FileNotFoundError(f"run directory {run_dir} holds no checkpoints/best(.ckpt) or last(.ckpt); "
                                "train it first or pass a checkpoint file")
    return path


def _metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _saved_config(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The config a vlkit checkpoint carries (foreign checkpoints' configs use other keys)."""
    hparams = checkpoint.get("hyper_parameters")
    if "vlkit" in checkpoint and isinstance(hparams, Mapping) and isinstance(hparams.get("config"), Mapping):
        return dict(hparams["config"])
    return None


def read_source_checkpoint(path: str, trust_checkpoint: bool) -> Mapping[str, Any]:
    """The checkpoint file, read by ``vlkit.utils.safe_load`` through ``read_checkpoint``: tensors,
    plain values and a few known harmless types unless ``trust_checkpoint``."""
    return read_checkpoint(path, "checkpoint", trust_checkpoint)


def _read_with_digest(path: Path, trust_checkpoint: bool) -> tuple[Mapping[str, Any], str]:
    """The checkpoint and the SHA-256 of the file read; a sharded folder is consolidated into a
    temporary single file (``vlkit checkpoint consolidate``'s) and read from there."""
    if not is_sharded_checkpoint(path):
        return read_source_checkpoint(str(path), trust_checkpoint), file_sha256(str(path))
    with tempfile.TemporaryDirectory() as scratch:
        single = str(consolidate(path, Path(scratch) / f"{path.name}.ckpt"))
        return read_source_checkpoint(single, trust_checkpoint), file_sha256(single)


def resolve_source(source: str | os.PathLike, words: Sequence[str] = (),
                   trust_checkpoint: bool = False) -> tuple[Source | None, Mapping[str, Any], str, str]:
    """The config, checkpoint and metrics of ``source`` (run directory, checkpoint file or sharded
    checkpoint folder), ``words`` applied on top of a saved config; also the checkpoint as read,
    its path and the SHA-256 of the file read (a folder's consolidated file). The source is None
    for a ``vlkit imagenet`` classifier checkpoint (``vlkit.api.classifier``)."""
    path = Path(source)
    if path.is_dir() and not is_sharded_checkpoint(path):
        if is_model_folder(path):
            raise ValueError(f"{path} is already a model folder; load it with vlkit.load({str(path)!r})")
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"{path} is neither a run directory (config.yaml + checkpoints/) nor a "
                                    "checkpoint file")
        checkpoint_path = _run_checkpoint(path)
        run_dir: Path | None = path
    else:
        checkpoint_path = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    checkpoint, sha256 = _read_with_digest(checkpoint_path, trust_checkpoint)
    if is_classifier_checkpoint(checkpoint):
        return None, checkpoint, str(checkpoint_path), sha256
    saved = _saved_config(checkpoint)
    if saved is None and run_dir is not None and (run_dir / "config.yaml").is_file():
        saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    if saved is None and not words:
        raise ValueError(f"{checkpoint_path} carries no vlkit config: give the presets and key=value words "
                         "that describe its model, e.g. `vlkit export FILE --out DIR with vlc_base task_finetune_vqa`")
    cfg = resolve_config(list(words), values=saved, source=f"the config saved with {checkpoint_path}")
    metrics = _metrics(run_dir) if run_dir is not None else {}
    return Source(cfg, str(checkpoint_path), metrics), checkpoint, str(checkpoint_path), sha256


def answer_vocabulary(cfg: DictConfig, model: nn.Module) -> list[str] | None:
    """The answers a VQA head chooses from (the task's vocabulary), None for a model without one."""
    if not any(hasattr(model, head) for head in ANSWER_HEADS):
        return None
    from vlkit.tasks import build_task

    try:
        return list(build_task(cfg).answers)
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise ValueError(
            f"the model has a VQA head but its answer vocabulary could not be read ({err}); give "
            "data_root= (Arrow tables) or answer_list= (ALBEF json) so the export can write answers.json"
        ) from err


def build_loaded_model(cfg: DictConfig, checkpoint: Mapping[str, Any], path: str) -> tuple[nn.Module, LoadReport]:
    """The model ``cfg`` describes with the checkpoint loaded into it, in eval mode."""
    build_cfg = cfg.copy()
    build_cfg.load_path = ""
    build_cfg.pretrain_path = ""
    model = build_model(build_cfg)
    report = apply_checkpoint(model, checkpoint, detect_format(checkpoint, path), path)
    if report.missing:
        log.warning("the checkpoint does not fill these model keys (they keep their initial values): %s",
                    report.missing[:20])
    return model.eval(), report


def export_source(source: str | os.PathLike, out: str | os.PathLike, words: Sequence[str] = (),
                  trust_checkpoint: bool = False) -> Source | None:
    """Write the model folder of ``source`` into ``out``; returns what was read (config, checkpoint,
    metrics; None for an image classifier)."""
    resolved, checkpoint, path, sha256 = resolve_source(source, words, trust_checkpoint)
    if resolved is None:
        export_classifier(checkpoint, path, sha256, out)
        return None
    model, report = build_loaded_model(resolved.cfg, checkpoint, resolved.checkpoint)
    answers = answer_vocabulary(resolved.cfg, model)
    tokenizer = load_tokenizer(resolved.cfg.tokenizer)
    card = model_card(resolved.cfg, model, resolved.checkpoint, sha256, resolved.metrics, report, answers)
    write_model_folder(out, resolved.cfg, model, tokenizer, answers, card)
    check_rebuilds(model, out)
    log.info("exported %s to %s", resolved.checkpoint, out)
    return resolved


def check_rebuilds(model: nn.Module, folder: str | os.PathLike) -> None:
    """Build the folder's config on the meta device and compare every tensor's shape with the
    exported model's, so a folder that would not load fails here, naming the keys."""
    with torch.device("meta"):
        rebuilt = build_model(folder_config(folder)).state_dict()
    exported = model.state_dict()
    differ = [f"{key}: {tuple(exported[key].shape)} vs {tuple(rebuilt[key].shape)}"
              for key in sorted(exported.keys() & rebuilt.keys()) if exported[key].shape != rebuilt[key].shape]
    missing, extra = sorted(exported.keys() - rebuilt.keys()), sorted(rebuilt.keys() - exported.keys())
    if differ or missing or extra:
        raise ValueError(
            f"the model folder {folder} would not rebuild this model from its config.yaml: shapes {differ[:5]}, "
            f"only in the checkpoint {missing[:5]}, only in the rebuilt model {extra[:5]} (a pretrained backbone "
            "whose architecture the config does not record)"
        )


def export(source: str | os.PathLike, out: str | os.PathLike, words: Sequence[str] = (),
           trust_checkpoint: bool = False) -> Path:
    """Write the model folder of ``source`` (run directory or checkpoint file) into ``out``; returns ``out``."""
    export_source(source, out, words, trust_checkpoint)
    return Path(out)


def export_best(run_dir: str | os.PathLike) -> Path | None:
    """Export a finished run's best (else last) checkpoint (file, or sharded folder under
    ``strategy=fsdp``) into ``run_dir/model``; None when it has no checkpoint or the export fails
    (the reason is logged: the run itself succeeded)."""
    run_dir = Path(run_dir)
    if _find_run_checkpoint(run_dir) is None:
        return None
    try:
        return export(run_dir, run_dir / RUN_FOLDER)
    except (OSError, ValueError) as err:
        log.warning("export_best: could not export %s (%s); run `vlkit export %s --out DIR` with what it needs",
                    run_dir, err, run_dir)
        return None

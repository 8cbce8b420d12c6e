"""CLIP-ViL's tasks on LXMERT-format json (fact sheet clipvil.md §3, §5): two-stage pre-training
(``clipvil_pretrain``) and VQA (``clipvil_vqa``), both on ``model=clipvil``.

Files: ``train_file`` / ``val_file`` / ``test_file`` (paths relative to the current directory or
``data_root``), images under ``image_root`` (else ``data_root``) in the reference's folders
(``mscoco/train2014``, ``vg_raw_images/VG_100K``, ...).

Pre-training runs one forward pass on the MLM-masked text per batch and sums MLM (``loss_names
.mlm``), ITM (``loss_names.itm``, negatives swapped in by the dataset) and, in stage two, QA over
``qa_label_size`` answers (``qa_answers``): weights 1, as published. VQA trains LXMERT's answer head
with BCE (``vqa_loss_scale``), reports the soft score of the arg-max answer (``score``) and writes
``{split}_predict.json`` (``[{"answer", "question_id"}]``, the leaderboard format) in ``test``.
"""
from __future__ import annotations

import logging
import os
from functools import cached_property
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

from vlkit.data.canvas import ResizePadNormalize
from vlkit.data.datasets.lxmert import LxmertCollator, LxmertImages, LxmertPretrainDataset, LxmertVqaDataset
from vlkit.data.json_ann import as_file_list, resolve_json_path
from vlkit.data.lxmert import AnswerTable, normalize_answer, pretrain_sentences, read_answer_list, vqa_questions
from vlkit.engine.logging import run_name
from vlkit.eval.metrics import SumMeter, ratio
from vlkit.models.build import build_model
from vlkit.models.checkpoints import load_checkpoint, read_checkpoint
from vlkit.models.checkpoints.clip import read_clip_state_dict
from vlkit.models.checkpoints.clipvil import write_pretrain_files, write_vqa_file
from vlkit.models.checkpoints.clipvil_parts import reference_only_parts
from vlkit.objectives import classification_loss, itm_loss, mlm_loss, vqa_loss, vqa_targets
from vlkit.tasks.arrow_task import ArrowTask, logged_terms, term_loss
from vlkit.tasks.vqa import VQATask
from vlkit.utils.seeding import seeded
from vlkit.utils.tensors import move_to_device

log = logging.getLogger(__name__)

SPLIT_KEYS = {"train": "train_file", "val": "val_file", "test": "test_file"}


def qa_answer_table(cfg: Any) -> AnswerTable:
    """LXMERT's QA answers (``qa_answers``, filtered by ``qa_sets``)."""
    if not cfg.qa_answers:
        raise ValueError("the QA head needs qa_answers (LXMERT's all_ans.json)")
    return AnswerTable.from_file(resolve_json_path(cfg.qa_answers, cfg.data_root, "qa_answers"), list(cfg.qa_sets))


class ClipVilData(ArrowTask):
    """What both tasks share: the model check, split files, images and the collator."""

    def check_model(self) -> None:
        if self.cfg.model != "clipvil":
            raise ValueError(f"task {self.name} runs model=clipvil, not model={self.cfg.model!r}")

    def split_files(self, split: str) -> list[str]:
        key = SPLIT_KEYS[split]
        return [resolve_json_path(path, self.cfg.data_root, key) for path in as_file_list(self.cfg[key], key)]

    @cached_property
    def images(self) -> LxmertImages:
        transform = ResizePadNormalize(self.cfg.image_size_min, self.cfg.image_size_max, self.cfg.dynamic_padding)
        return LxmertImages(self.cfg.image_root or self.cfg.data_root, transform)

    def collate_fn(self, split: str) -> Callable[[list], dict]:
        return LxmertCollator(self.tokenizer, self.cfg.mlm_prob, self.cfg.whole_word_masking)

    @cached_property
    def reference_parts(self) -> dict[str, torch.Tensor]:
        """What the reference layout holds beyond the model (``clipvil_parts``), for the files
        written into ``reference_checkpoint_dir``: from ``load_path`` where it has them."""
        trust = self.cfg.trust_checkpoint
        loaded = read_checkpoint(self.cfg.load_path, "load_path", trust) if self.cfg.load_path else None
        if loaded is not None and isinstance(loaded.get("state_dict"), Mapping):
            loaded = loaded["state_dict"]
        clip_state = read_clip_state_dict(self.cfg.clip_path, "clip_path", trust) if self.cfg.clip_path else None
        return reference_only_parts(self.cfg, loaded, clip_state)


class ClipVilPretrainTask(ClipVilData):
    """MLM + ITM (stage one) and + QA (stage two); ``the_metric`` = sum of their accuracies."""

    name = "clipvil_pretrain"
    ablation_metrics = ("itm_accuracy", "qa_accuracy", "mlm_accuracy")

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.check_model()
        self.terms = [term for term in ("mlm", "itm") if cfg.loss_names.get(term, 0) >= 1]
        if cfg.qa_label_size > 0:
            self.terms.append("qa")
        if not self.terms:
            raise ValueError("CLIP-ViL pre-training needs loss_names.mlm or loss_names.itm >= 1, or qa_label_size > 0")

    @cached_property
    def answer_table(self) -> AnswerTable | None:
        """The QA answers (``qa_answers``, filtered by ``qa_sets``); None without QA."""
        if "qa" not in self.terms:
            return None
        table = qa_answer_table(self.cfg)
        if len(table.answers) != self.cfg.qa_label_size:
            raise ValueError(f"{self.cfg.qa_answers} holds {len(table.answers)} answers (qa_sets="
                             f"{list(self.cfg.qa_sets)}) but qa_label_size={self.cfg.qa_label_size}; set it to "
                             f"{len(table.answers)}")
        return table

    def build_dataset(self, split: str) -> Dataset | None:
        paths = self.split_files(split)
        if not paths:
            return None
        sentences = pretrain_sentences(paths, self.answer_table, list(self.cfg.lxmert_limit_sources))
        return LxmertPretrainDataset(sentences, self.images, self.tokenizer, self.cfg.max_text_len,
                                     itm="itm" in self.terms, qa="qa" in self.terms)

    def compute(self, model: nn.Module, batch: dict) -> dict[str, Any]:
        """One pass on the MLM-masked text: every running term's ``LossOutput``."""
        text_ids = batch["text_ids_mlm"] if "mlm" in self.terms else batch["text_ids"]
        features = model.infer(text_ids, batch["text_masks"], batch["image"], batch["image_pixel_mask"])
        out = {}
        if "mlm" in self.terms:
            out["mlm"] = mlm_loss(model.mlm_score(features["text_feats"]), batch["text_labels_mlm"])
        if "itm" in self.terms:
            out["itm"] = itm_loss(model.itm_score(features["cls_feats"]), batch["itm_labels"])
        if "qa" in self.terms:
            out["qa"] = classification_loss(model.qa_head(features["cls_feats"]), batch["qa_labels"])
        return out

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, Any]:
        out = self.compute(model, batch)
        return {"loss": sum(term_loss(value) for value in out.values()), **logged_terms(out)}

    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        """Exact accuracies and sample-weighted losses; MLM masks and ITM swaps come from the
        sample seeds, so every evaluation sees the same batches."""
        device = next(model.parameters()).device
        meter = SumMeter(device)
        with seeded(self.cfg.seed, devices=[device] if device.type == "cuda" else []):
            for batch in loader:
                batch = move_to_device(batch, device)
                size = batch["image"].shape[0]
                meter.add("samples", size)
                for name, value in self.compute(model, batch).items():
                    meter.add(f"{name}_loss", value.loss.detach() * size)
                    meter.add(f"{name}_correct", value.correct)
                    meter.add(f"{name}_total", value.total)
        sums = meter.reduce()
        metrics = {f"{name}_loss": ratio(sums, f"{name}_loss", "samples") for name in self.terms}
        metrics.update({f"{name}_accuracy": ratio(sums, f"{name}_correct", f"{name}_total") for name in self.terms})
        metrics["the_metric"] = sum(metrics[f"{name}_accuracy"] for name in self.terms)
        return metrics

    def on_checkpoint(self, checkpoint: dict[str, Any], is_best: bool, end_of_epoch: bool) -> None:
        """With ``reference_checkpoint_dir``: ``EpochNN_LXRT*.pth`` (or ``EpochNNStepS_LXRT*.pth``
        within an epoch) there too, as the reference saves them."""
        if self.cfg.reference_checkpoint_dir:
            written = write_pretrain_files(checkpoint, self.cfg.reference_checkpoint_dir, end_of_epoch,
                                           self.reference_parts)
            log.info("reference-layout checkpoint: %s", written[0])


class ClipVilVqaTask(ClipVilData, VQATask):
    """VQA on LXMERT's VQA json with ``vqa_classifier`` (optionally initialised from a
    checkpoint's QA head: ``vqa_head_from_qa``); evaluation and metrics are ``VQATask``'s."""

    name = "clipvil_vqa"

    def __init__(self, cfg: Any):
        ClipVilData.__init__(self, cfg)
        self.check_model()
        if cfg.loss_names.get("vqa", 0) < 1:
            raise ValueError("clipvil_vqa trains the VQA head: set loss_names.vqa=1")
        if len(self.answers) != cfg.vqav2_label_size:
            raise ValueError(f"answer_list={cfg.answer_list!r} holds {len(self.answers)} answers but "
                             f"vqav2_label_size={cfg.vqav2_label_size}; set vqav2_label_size={len(self.answers)}")

    @cached_property
    def answers(self) -> list[str]:
        """Label → answer (``answer_list``: VQA's ``trainval_label2ans.json``)."""
        if not self.cfg.answer_list:
            raise ValueError("clipvil_vqa needs answer_list (VQA's trainval_label2ans.json)")
        return read_answer_list(resolve_json_path(self.cfg.answer_list, self.cfg.data_root, "answer_list"))

    def build_model(self) -> nn.Module:
        """The model; ``load_path`` loaded afterwards so that, with ``vqa_head_from_qa``, the
        checkpoint's QA head fills ``vqa_classifier`` row by normalised answer."""
        model = build_model(OmegaConf.merge(self.cfg, {"load_path": ""}))
        if self.cfg.load_path:
            if self.cfg.vqa_head_from_qa:
                table = qa_answer_table(self.cfg)
                model.answer_transplant = (table.answers, [normalize_answer(a) for a in self.answers])
            log.info("load_path: %s", load_checkpoint(model, self.cfg.load_path, config_key="load_path",
                                                              trust_checkpoint=self.cfg.trust_checkpoint))
        return model

    def build_dataset(self, split: str) -> Dataset | None:
        paths = self.split_files(split)
        if not paths:
            return None
        index = {answer: label for label, answer in enumerate(self.answers)}
        questions = vqa_questions(paths, index, require_labels=split != "test")
        return LxmertVqaDataset(questions, self.images, self.tokenizer, self.cfg.max_text_len)

    def logits(self, model: nn.Module, batch: dict) -> torch.Tensor:
        features = model.infer(batch["text_ids"], batch["text_masks"], batch["image"], batch["image_pixel_mask"])
        return model.vqa_classifier(features["cls_feats"])

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean BCE × ``vqa_loss_scale`` (the reference's ``--loss_scale``), or × the answer count when 0."""
        if self.cfg.vqa_loss_scale > 0:
            return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype)) * self.cfg.vqa_loss_scale
        return vqa_loss(logits, targets)

    def predict(self, model: nn.Module, batch: dict, with_loss: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.logits(model, batch).float()
        if not with_loss:
            return logits.argmax(dim=1), None
        targets = vqa_targets(batch["vqa_labels"], batch["vqa_scores"], logits.shape[1], logits.device)
        return logits.argmax(dim=1), self.loss(logits, targets)

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.logits(model, batch)
        targets = vqa_targets(batch["vqa_labels"], batch["vqa_scores"], logits.shape[1], logits.device)
        loss = self.loss(logits, targets)
        score = targets.gather(1, logits.detach().argmax(dim=1, keepdim=True)).mean()
        return {"loss": loss, "vqa_loss": loss.detach(), "vqa_score": score}

    def on_checkpoint(self, checkpoint: dict[str, Any], is_best: bool, end_of_epoch: bool) -> None:
        """With ``reference_checkpoint_dir``: ``LAST.pth`` (the latest weights) there too, and
        ``BEST.pth`` whenever the validation score improved, as the reference saves them."""
        folder = self.cfg.reference_checkpoint_dir
        if folder:
            write_vqa_file(checkpoint, os.path.join(folder, "LAST.pth"), self.reference_parts)
            if is_best:
                write_vqa_file(checkpoint, os.path.join(folder, "BEST.pth"), self.reference_parts)

    def submission_path(self, out_dir: str, split: str = "test") -> str:
        """``{log_dir}/{run name}/{split}_predict.json``: the reference's ``<output>/test_predict.json``."""
        return os.path.join(self.cfg.log_dir, run_name(self.cfg), f"{split}_predict.json")

    def test(self, model: nn.Module, loader, out_dir: str) -> dict[str, float]:
        """Predict every question of ``test_file``; write ``test_predict.json`` (a file name with
        ``test``) or ``minival_predict.json`` (otherwise, as the reference); questions with
        labels are also scored (``score``)."""
        device = next(model.parameters()).device
        local, meter = [], SumMeter(device)
        meter.add("score", 0.0)
        meter.add("labelled", 0.0)
        for batch in self.progress(loader, "test"):
            batch = move_to_device(batch, device)
            predicted = self.logits(model, batch).float().argmax(dim=1)
            targets = vqa_targets(batch["vqa_labels"], batch["vqa_scores"], self.num_answers, device)
            meter.add("score", targets.gather(1, predicted[:, None]).sum())
            meter.add("labelled", sum(1 for labels in batch["vqa_labels"] if labels))
            local += [(qid, self.answers[label]) for qid, label in zip(batch["qid"].tolist(), predicted.tolist())]
        sums = meter.reduce()
        split = "test" if any("test" in os.path.basename(p) for p in self.split_files("test")) else "minival"
        metrics = self.write_submission(local, self.submission_path(out_dir, split), LxmertVqaDataset.question_ids)
        if sums["labelled"]:
            metrics["score"] = sums["score"] / sums["labelled"]
        return metrics

"""Image-text retrieval fine-tuning and evaluation (fact sheet §3.7, §6.3).

Training (``IRTRTask``, VLC/ViLT): each image against its caption and ``draw_false_text``
captions of other images (never one of its own); the ``rank_output`` scores of the 1 + K pairs go
through a softmax with the positive as the target. ``rank_output`` starts as a copy of the ITM
head's "match" row. With ``itc`` in ``loss_names`` an image-text contrastive term on text-only
and image-only passes is added; it powers the ``fast`` evaluation protocol.

Training (``AlbefRetrievalTask``, ALBEF / GRIT-VLP, grit_albef.md §2.5): ITC in which every caption
of the same image is a positive (against the momentum model's queue when ``momentum`` > 0) plus
ITM on the batch's pairs and negatives drawn by ITC similarity (never the same image), computed
as pre-training computes them; pairs are scored by the ITM "match" logit, as ALBEF's evaluation.

Evaluation: recall@1/5/10 both ways on the split's images and captions (``retrieval_protocol``
exact or fast, see ``vlkit.eval.retrieval_eval``); ``the_metric`` = ``ir_r1 + tr_r1`` on the
validation split (the reference's COCO preset monitored a constant 0).
"""
from __future__ import annotations

import abc
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from vlkit.data.datasets import build_dataset
from vlkit.data.samplers import ResumableDistributedSampler
from vlkit.eval.retrieval_eval import RetrievalEvaluator, RetrievalTexts
from vlkit.models.build import build_model_with_reports
from vlkit.models.heads import init_rank_from_itm
from vlkit.objectives import LossOutput, classification_loss
from vlkit.tasks.ablation import BlankImages
from vlkit.tasks.arrow_task import ArrowTask, logged_terms
from vlkit.tasks.contrastive import itc_term
from vlkit.tasks.pretrain import PretrainTask

RANK_KEYS = ("rank_output.weight", "rank_output.bias")


class RecallEvaluation(ArrowTask):
    """Recall@1/5/10 both ways on one caption dataset's split; subclasses give ``match_score``."""

    ablation_metrics = ("r_mean", "ir_r1", "tr_r1")

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if len(cfg.datasets) != 1:
            raise ValueError(
                f"retrieval ranks the images and captions of one dataset; got datasets="
                f"{list(cfg.datasets)}: give one, e.g. datasets=['f30k']"
            )
        self._recall_inputs: dict[str, tuple[DataLoader, RetrievalTexts]] = {}

    @abc.abstractmethod
    def match_score(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) scores of N fused image-caption pairs (``model.infer`` output), higher = better."""

    def recall_inputs(self, split: str) -> tuple[DataLoader, RetrievalTexts]:
        """A loader over the split's images (each once across processes) and all its captions,
        built (and the captions tokenised) once per split."""
        if split not in self._recall_inputs:
            self._recall_inputs[split] = self._build_recall_inputs(split)
        return self._recall_inputs[split]

    def _build_recall_inputs(self, split: str) -> tuple[DataLoader, RetrievalTexts]:
        cfg = OmegaConf.merge(self.cfg, {"image_only": True, "draw_false_image": 0, "draw_false_text": 0})
        dataset = build_dataset(self.cfg.datasets[0], split, cfg, self.tokenizer)
        if dataset is None:
            raise ValueError(f"dataset {self.cfg.datasets[0]!r} has no {split} split to evaluate retrieval on")
        sampler = ResumableDistributedSampler(dataset, seed=self.cfg.seed, training=False)
        loader = DataLoader(dataset, batch_size=self.cfg.per_gpu_batchsize, sampler=sampler,
                            num_workers=self.cfg.num_workers, collate_fn=self.collate_fn(split))
        captions = [dataset.row_texts(int(row))[int(slot)] for row, slot in zip(dataset.text_rows, dataset.text_slots)]
        encoded = self.tokenizer(captions, padding="max_length", truncation=True,
                                 max_length=self.cfg.max_text_len, return_tensors="pt")
        texts = RetrievalTexts(encoded["input_ids"], encoded["attention_mask"], torch.as_tensor(dataset.text_rows))
        return loader, texts

    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        """Recall on ``split`` (the trainer's ``loader`` of caption samples is not needed)."""
        return self._recall(model, split, blank=False)

    def evaluate_blank(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        """Recall on ``split`` with every image blank (the image-ablation baseline)."""
        return self._recall(model, split, blank=True)

    def _recall(self, model: nn.Module, split: str, blank: bool) -> dict[str, float]:
        images, texts = self.recall_inputs(split)
        if blank:
            images = BlankImages(images)
        evaluator = RetrievalEvaluator(
            model, lambda features: self.match_score(model, features),
            protocol=self.cfg.retrieval_protocol, k_test=self.cfg.k_test,
            pairs_per_batch=self.cfg.eval_pairs_per_batch, progress=self.cfg.progress_bar,
            ties=self.cfg.recall_ties,
        )
        metrics = evaluator.evaluate(images, texts)
        metrics["the_metric"] = metrics["ir_r1"] + metrics["tr_r1"]
        return metrics

    def evaluation_info(self) -> dict[str, Any]:
        return {"protocol": self.cfg.retrieval_protocol, "k_test": self.cfg.k_test,
                "recall_ties": self.cfg.recall_ties}


class IRTRTask(RecallEvaluation):
    """VLC/ViLT retrieval on one caption dataset (``coco`` or ``f30k``); see the module docstring."""

    name = "irtr"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if cfg.draw_false_text < 1:
            raise ValueError("retrieval training ranks the caption against negatives: set draw_false_text >= 1 (VLC: 15)")
        self.use_itc = cfg.loss_names.get("itc", 0) >= 1

    def build_model(self) -> nn.Module:
        """The model; ``rank_output`` copied from the ITM match row unless a checkpoint gave it."""
        model, reports = build_model_with_reports(self.cfg)
        loaded = {key for report in reports for key in report.loaded_keys}
        if not all(key in loaded for key in RANK_KEYS):
            init_rank_from_itm(model)
        elif hasattr(model, "itm_score"):
            model.itm_score.requires_grad_(False)
        return model

    def compute(self, model: nn.Module, batch: dict) -> dict[str, LossOutput]:
        negatives = self.cfg.draw_false_text
        keys = ["text", *(f"false_text_{k}" for k in range(negatives))]
        ids = torch.stack([batch[f"{key}_ids"] for key in keys], dim=1)  # (B, 1 + K, L)
        masks = torch.stack([batch[f"{key}_masks"] for key in keys], dim=1)
        embeds = model.embed_image(batch["image"])
        repeated = {key: value.repeat_interleave(len(keys), dim=0) for key, value in embeds.items()}
        features = model.infer(ids.flatten(0, 1), masks.flatten(0, 1), image_embeds=repeated)
        scores = model.rank_output(features["cls_feats"])[:, 0].view(len(ids), len(keys))
        out = {"irtr": classification_loss(scores, torch.zeros(len(ids), dtype=torch.long, device=ids.device))}
        if self.use_itc:
            out["itc"] = itc_term(model, batch["text_ids"], batch["text_masks"], embeds, self.cfg)
        return out

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        out = self.compute(model, batch)
        return {"loss": sum(value.loss for value in out.values()), **logged_terms(out)}

    def match_score(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.rank_output(features["cls_feats"])[:, 0]


class AlbefRetrievalTask(RecallEvaluation):
    """ALBEF / GRIT-VLP retrieval fine-tuning (see the module docstring); needs
    ``loss_names.itc`` and ``.itm`` >= 1 and ``itm_negatives`` ``sampled`` (ALBEF) or ``hardest``."""

    name = "albef_retrieval"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.objective = PretrainTask(cfg)
        if set(self.objective.terms) != {"itc", "itm"} or cfg.itm_negatives == "random":
            raise ValueError(
                f"albef_retrieval trains ITC and ITM with in-batch negatives: set loss_names={{itc: 1, "
                f"itm: 1}} and itm_negatives=sampled (got terms {self.objective.terms}, "
                f"itm_negatives={cfg.itm_negatives})"
            )

    def on_train_batch(self, epoch: int, batch_in_epoch: int, batches_per_epoch: int) -> None:
        self.objective.on_train_batch(epoch, batch_in_epoch, batches_per_epoch)

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        return self.objective.training_step(model, batch)

    def match_score(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """ALBEF's evaluation score: the raw ITM logit of "match"."""
        return model.itm_score(features["cls_feats"])[:, 1]

"""Pre-training: MLM, ITM (with the WPA optimal-transport term), MAE (fact sheet §3.1-3.4) and
optionally ITC.

A term runs when its ``loss_names`` value is >= 1. MLM and MAE share one forward pass (masked
text, patch-dropped image), as VLC; ITM has its own pass on the unmasked text, where half of the
images are swapped for ``false_image_0``. ITC contrasts text-only and image-only passes. The
total is ``mlm + mae_weight * mae + itm + wpa_weight * wpa + itc``, VLC's sum plus ITC.

The ALBEF / GRIT-VLP recipe (grit_albef.md §2.4, §3.2-3.4) is the same task with
``itm_negatives=hardest`` (or ``sampled``): ITM negatives come from the batch by ITC similarity,
3B pairs per batch; ``itc_in_batch`` and ``itc_consistency_weight`` give GRIT's ITC. With a
momentum model (``momentum`` > 0, ALBEF) each training step first moves it towards the online
weights, then ITC runs against its features and queue, and with ``distill_alpha`` > 0 ITC and
MLM are distilled from it (the weight ramping up over the first epoch with ``distill_warmup``).
Evaluation reports the plain terms (in-batch ITC, hard-label MLM), comparable across recipes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlkit.eval.metrics import SumMeter
from vlkit.models.fusion.single_stream import drops_patches
from vlkit.models.momentum import momentum_update
from vlkit.models.token_reduction import schedule_from_config
from vlkit.objectives import (
    LossOutput, distilled_mlm_loss, in_batch_negatives, itm_labels, itm_loss, mae_loss, wpa_loss,
)
from vlkit.tasks.arrow_task import ArrowTask, logged_terms, term_loss
from vlkit.tasks.contrastive import ContrastiveOutput, MomentumBatch, itc_term, momentum_batch, momentum_itc_term
from vlkit.utils import distributed
from vlkit.utils.seeding import seeded
from vlkit.utils.tensors import move_to_device

PRETRAIN_TERMS = ("mlm", "itm", "mae", "itc")
ITM_NEGATIVES = ("random", "hardest", "sampled")


def runs(cfg: Any, term: str) -> bool:
    """Whether the ``loss_names`` term is trained (value >= 1, as the reference)."""
    return cfg.loss_names.get(term, 0) >= 1


class PretrainTask(ArrowTask):
    """MLM + ITM (+ WPA) + MAE on image-caption data; ``the_metric`` = MLM + ITM accuracy."""

    name = "pretrain"
    ablation_metrics = ("itm_accuracy", "itc_accuracy", "mlm_accuracy")

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.terms = [term for term in PRETRAIN_TERMS if runs(cfg, term)]
        self.alpha = 0.0 if cfg.distill_warmup else cfg.distill_alpha
        self.prunes_tokens = schedule_from_config(cfg) is not None
        """ELIP is configured: the image embedding for ITC / in-batch ITM gets the paired caption."""
        self._check_config()

    def on_train_batch(self, epoch: int, batch_in_epoch: int, batches_per_epoch: int) -> None:
        """Ramp the distillation weight over the first epoch (ALBEF's ``warm_up``)."""
        ramp = min(1.0, batch_in_epoch / max(batches_per_epoch, 1)) if epoch == 0 else 1.0
        self.alpha = self.cfg.distill_alpha * (ramp if self.cfg.distill_warmup else 1.0)

    def _check_config(self) -> None:
        cfg = self.cfg
        if runs(cfg, "mpp"):
            raise ValueError(
                "loss_names.mpp (ViLT's masked patch prediction) is not supported: ViLT's own code "
                "cannot run it (its ViT has no mask token); use MAE instead: loss_names.mae=1 use_mae=True"
            )
        if not self.terms:
            raise ValueError("pre-training needs loss_names.mlm, .itm, .mae or .itc >= 1")
        if cfg.itm_negatives not in ITM_NEGATIVES:
            raise ValueError(f"itm_negatives={cfg.itm_negatives!r}: choose one of {list(ITM_NEGATIVES)}")
        if "itm" in self.terms and cfg.itm_negatives == "random" and cfg.draw_false_image < 1:
            raise ValueError("ITM needs negative images: set draw_false_image=1 (or loss_names.itm=0)")
        if "itm" in self.terms and cfg.itm_negatives != "random" and "itc" not in self.terms:
            raise ValueError(
                f"itm_negatives={cfg.itm_negatives} picks negatives by ITC similarity: set loss_names.itc=1"
            )
        if "mae" in self.terms:
            if not cfg.use_mae:
                raise ValueError(
                    "loss_names.mae=1 but use_mae=False, a run that VLC would silently train without "
                    "MAE; set use_mae=True, or loss_names.mae=0"
                )
            if not drops_patches(cfg):
                raise ValueError(
                    "MAE reconstructs dropped patches, but patch dropping is off; set "
                    "mae_patch_drop=True (or is_pretrain=True)"
                )

    # ----- losses -----------------------------------------------------------------------------

    def _mlm_and_mae(self, model: nn.Module, batch: dict, image_embeds: dict | None,
                     teacher: MomentumBatch | None) -> dict[str, Any]:
        """One pass on the MLM-masked text; MLM and MAE outputs of the terms that run. The image
        comes as ``image_embeds`` when the ITM/ITC passes already embedded it the same way. With a
        ``teacher`` and a distillation weight, MLM is distilled from the momentum model."""
        text_ids = batch["text_ids_mlm"] if "mlm" in self.terms else batch["text_ids"]
        image = None if image_embeds is not None else batch["image"]
        features = model.infer(text_ids, batch["text_masks"], image, image_embeds=image_embeds)
        out: dict[str, Any] = {}
        if "mlm" in self.terms:
            alpha = self.alpha if teacher is not None else 0.0
            teacher_logits = self._teacher_mlm_logits(model, batch, teacher) if alpha > 0 else None
            out["mlm"] = distilled_mlm_loss(
                model.mlm_score(features["text_feats"]), batch["text_labels_mlm"], teacher_logits, alpha
            )
        if "mae" in self.terms:
            prediction = model.mae_predict(features["image_feats"], features["mae_ids_restore"])
            target = model.patchify(batch["image"]).to(prediction.dtype)
            out["mae"] = mae_loss(prediction, target, features["mae_mask"], self.cfg.norm_pix_loss)
        return out

    @staticmethod
    @torch.no_grad()
    def _teacher_mlm_logits(model: nn.Module, batch: dict, teacher: MomentumBatch) -> torch.Tensor:
        momentum = model.momentum_model
        features = momentum.infer(batch["text_ids_mlm"], batch["text_masks"], image_embeds=teacher.image_embeds)
        return momentum.mlm_score(features["text_feats"])

    def _itm_outputs(self, model: nn.Module, features: dict, labels: torch.Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {"itm": itm_loss(model.itm_score(features["cls_feats"]), labels)}
        if self.cfg.wpa_weight > 0:
            out["itm_wpa"] = wpa_loss(
                features["text_feats"], features["image_feats"], features["text_masks"],
                features["image_masks"], labels,
            )
        return out

    def _itm(self, model: nn.Module, batch: dict) -> dict[str, Any]:
        """ITM on own/false images (labels from the global RNG) and the WPA term; patches are
        dropped as ``itm_patch_drop`` says (None: as the encoder's default, which is VLC's)."""
        images = batch["image"]
        labels = itm_labels(images.shape[0], device=images.device)
        matched = labels.view(-1, 1, 1, 1).bool()
        pairs = torch.where(matched, images, batch["false_image_0"])
        features = model.infer(batch["text_ids"], batch["text_masks"], pairs, mask_image=self.cfg.itm_patch_drop)
        return self._itm_outputs(model, features, labels)

    def _itm_in_batch(self, model: nn.Module, batch: dict, image_embeds: dict,
                      itc: ContrastiveOutput) -> dict[str, Any]:
        """ALBEF/GRIT ITM: B matched pairs, then for every text its negative image and for every
        image its negative text, chosen in the batch by ITC similarity (``itm_negatives``:
        ``hardest`` or ``sampled``); labels B ones then 2B zeros. Captions of one image are never
        each other's negatives."""
        same_image = batch["img_index"][:, None] == batch["img_index"][None, :]
        scale = model.itc_head.logit_scale.detach().clamp(
            min=self.cfg.itc_min_logit_scale, max=self.cfg.itc_max_logit_scale).exp()
        image_for_text, text_for_image = in_batch_negatives(
            scale * itc.similarity(), same_image, sample=self.cfg.itm_negatives == "sampled"
        )
        ids, masks = batch["text_ids"], batch["text_masks"]
        pair_ids = torch.cat([ids, ids, ids[text_for_image]])
        pair_masks = torch.cat([masks, masks, masks[text_for_image]])
        image_rows = torch.cat([torch.arange(len(ids), device=ids.device), image_for_text,
                                torch.arange(len(ids), device=ids.device)])
        pair_images = {key: value[image_rows] for key, value in image_embeds.items()}
        features = model.infer(pair_ids, pair_masks, image_embeds=pair_images)
        labels = torch.cat([torch.ones_like(ids[:, 0]), torch.zeros_like(image_rows[len(ids):])])
        return self._itm_outputs(model, features, labels)

    def _embed_image(self, model: nn.Module, batch: dict) -> dict:
        """The image as ITC and in-batch ITM see it (patches dropped as ``itm_patch_drop`` says;
        ELIP, when on, scores its patches against the paired caption)."""
        text = {}
        if self.prunes_tokens:
            text = {"text_ids": batch["text_ids"], "text_masks": batch["text_masks"]}
        return model.embed_image(batch["image"], mask_image=self.cfg.itm_patch_drop, **text)

    def _shares_image_pass(self) -> bool:
        """Whether the MLM pass sees the image as ITM/ITC do (no patches dropped in either)."""
        return not drops_patches(self.cfg) and not self.cfg.itm_patch_drop

    def compute(self, model: nn.Module, batch: dict, training: bool = False) -> dict[str, Any]:
        """Raw outputs of every running term: ``LossOutput`` for mlm/itm/itc, tensors for mae/itm_wpa.

        ``training`` with a momentum model: update it, run ITC (and MLM distillation) against it,
        then queue its features.

        The image is embedded once for ITC and in-batch ITM (and for MLM when no patches are
        dropped), so a family whose ``embed_image`` runs the whole vision tower runs it once. The
        terms run in VLC's order (MLM/MAE, random ITM, then ITC), so VLC runs draw the same
        random numbers as before ITC and in-batch ITM existed.
        """
        random_itm = "itm" in self.terms and self.cfg.itm_negatives == "random"
        # in-batch negatives need a second pair: a last batch of one trains no ITM
        in_batch_itm = "itm" in self.terms and not random_itm and batch["image"].shape[0] > 1
        needs_embeds = "itc" in self.terms or in_batch_itm
        shared = needs_embeds and self._shares_image_pass()
        teacher = self._momentum_step(model, batch) if training and hasattr(model, "momentum_model") else None
        image_embeds = self._embed_image(model, batch) if shared else None
        out: dict[str, Any] = {}
        if "mlm" in self.terms or "mae" in self.terms:
            out.update(self._mlm_and_mae(model, batch, image_embeds, teacher))
        if random_itm:
            out.update(self._itm(model, batch))
        if needs_embeds and image_embeds is None:
            image_embeds = self._embed_image(model, batch)
        if "itc" in self.terms:
            out["itc"] = self._itc(model, batch, image_embeds, teacher)
        if in_batch_itm:
            out.update(self._itm_in_batch(model, batch, image_embeds, out["itc"]))
        if teacher is not None and hasattr(model, "itc_queue"):
            model.itc_queue.enqueue(teacher.image, teacher.text, batch["img_index"])
        return out

    def _momentum_step(self, model: nn.Module, batch: dict) -> MomentumBatch:
        """Move the momentum model towards the online weights, then embed the batch with it."""
        momentum_update(model, self.cfg.momentum)
        return momentum_batch(model, batch["text_ids"], batch["text_masks"], batch["image"], self.cfg.itm_patch_drop)

    def _itc(self, model: nn.Module, batch: dict, image_embeds: dict,
             teacher: MomentumBatch | None) -> ContrastiveOutput:
        ids, masks = batch["text_ids"], batch["text_masks"]
        if teacher is None:
            return itc_term(model, ids, masks, image_embeds, self.cfg)
        return momentum_itc_term(model, ids, masks, image_embeds, teacher, batch["img_index"], self.cfg, self.alpha)

    def total_loss(self, out: dict[str, Any]) -> torch.Tensor:
        """VLC's sum: mlm + mae_weight·mae + itm + wpa_weight·wpa."""
        weights = {"mlm": 1.0, "itm": 1.0, "itc": 1.0, "mae": self.cfg.mae_weight, "itm_wpa": self.cfg.wpa_weight}
        return sum(weights[name] * term_loss(value) for name, value in out.items())

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, Any]:
        """Losses, and under ``itc_embeddings`` the detached ITC unit embeddings (image, text) that
        the GRIT sampler collects."""
        out = self.compute(model, batch, training=True)
        step = {"loss": self.total_loss(out), **logged_terms(out)}
        if "itc" in out:
            step["itc_embeddings"] = (out["itc"].image_embeds.detach(), out["itc"].text_embeds.detach())
        return step

    # ----- evaluation -------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, loader, split: str = "val") -> dict[str, float]:
        """Exact accuracies (summed counts) and sample-weighted mean losses over the split.

        The random parts (MLM masks come with the batch; ITM labels, MAE masks) are drawn under
        ``seed`` so every evaluation of a run sees the same pairs and leaves training RNG alone.
        Also reports chance levels: ``itm_chance`` (majority label), ``mlm_chance`` (always
        predicting the most frequent masked token) and ``itc_chance`` (a random text of the batch).
        """
        device = next(model.parameters()).device
        meter = SumMeter(device)
        token_counts = torch.zeros(self.cfg.vocab_size, dtype=torch.float64, device=device)

        cuda = [device] if device.type == "cuda" else []
        with seeded(self.cfg.seed, devices=cuda):
            for batch in loader:
                batch = move_to_device(batch, device)
                size = batch["image"].shape[0]
                meter.add("samples", size)
                meter.add("batches", 1)
                meter.add("num_skipped_images", batch.get("num_skipped_images", 0))
                out = self.compute(model, batch)
                for name, value in out.items():
                    meter.add(f"{name}_loss", term_loss(value).detach() * size)
                    if isinstance(value, LossOutput):
                        meter.add(f"{name}_correct", value.correct)
                        meter.add(f"{name}_total", value.total)
                if "mlm" in self.terms:
                    labels = batch["text_labels_mlm"]
                    token_counts += torch.bincount(
                        labels[labels >= 0], minlength=self.cfg.vocab_size
                    ).to(token_counts)
                if "itm" in out:
                    meter.add("itm_positives", size if self.cfg.itm_negatives != "random" else size // 2)
                elif "itm" in self.terms:  # a batch of one without ITM: every rank keeps the same keys
                    for key in ("itm_loss", "itm_correct", "itm_total", "itm_positives"):
                        meter.add(key, 0)
        token_counts = distributed.all_reduce_sum(token_counts)
        return self._metrics(meter.reduce(), token_counts)

    def _metrics(self, sums: dict[str, float], token_counts: torch.Tensor) -> dict[str, float]:
        samples = max(sums.get("samples", 0), 1)
        metrics = {"num_skipped_images": sums.get("num_skipped_images", 0.0)}
        for key, value in sums.items():
            if key.endswith("_loss"):
                metrics[key] = value / samples
        the_metric = 0.0
        for term in ("mlm", "itm", "itc"):
            if f"{term}_total" in sums:
                metrics[f"{term}_accuracy"] = sums[f"{term}_correct"] / max(sums[f"{term}_total"], 1)
                the_metric += metrics[f"{term}_accuracy"]
        if "mlm" in self.terms:
            metrics["mlm_chance"] = (token_counts.max() / token_counts.sum().clamp(min=1)).item()
        if "itm_total" in sums:
            positives = sums["itm_positives"] / max(sums["itm_total"], 1)
            metrics["itm_chance"] = max(positives, 1 - positives)
        if "itc" in self.terms:  # a random guess among the batch's texts
            metrics["itc_chance"] = sums["batches"] / samples
        metrics["the_metric"] = the_metric
        return metrics

"""Image-text retrieval evaluation with a cross-encoder, in two protocols.

* ``exact``: every (image, caption) pair is scored by the fused model, as the reference does, but
  many pairs per forward pass, each image's embeddings computed once, images split across
  processes without duplicates.
* ``fast``: a cheap first stage (cosine similarity of unimodal ITC embeddings) picks the ``k_test``
  best captions of every image and the ``k_test`` best images of every caption; only those pairs
  are scored by the cross-encoder. Recall is then computed on the re-ranked candidates (anything
  outside a query's candidates ranks last). The first stage's own recall is reported as
  ``itc_*``.

The model contract (every family): ``embed_image(image, mask_image=False) -> dict`` of per-image
tensors (batch first), ``infer(text_ids, text_masks, image_embeds=...)``, and for ``fast``
``text_only_feats``, ``image_only_feats`` and an ``itc_head``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vlkit.eval.retrieval import recall_at_k, topk_candidates
from vlkit.utils import distributed
from vlkit.utils.tensors import move_to_device

PROTOCOLS = ("exact", "fast")
TEXT_BATCH = 256
"""Captions per text-only forward pass (fast protocol's first stage)."""


@dataclass
class RetrievalTexts:
    """Every caption of the split, tokenised: ``ids`` / ``masks`` (T, L) and the image row of each."""

    ids: torch.Tensor
    masks: torch.Tensor
    image_rows: torch.Tensor

    def to(self, device: torch.device) -> "RetrievalTexts":
        return RetrievalTexts(self.ids.to(device), self.masks.to(device), self.image_rows.to(device))


def _select(embeds: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    return {key: value[index] for key, value in embeds.items()}


def _pair_chunks(
    candidates: Callable[[int], torch.Tensor], num_images: int, size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(image positions, text indices) of every candidate pair, ``size`` pairs at a time."""
    images, texts, pending = [], [], 0
    for image in range(num_images):
        chosen = candidates(image)
        start = 0
        while start < len(chosen):
            take = min(size - pending, len(chosen) - start)
            images.append(torch.full((take,), image, dtype=torch.long, device=chosen.device))
            texts.append(chosen[start:start + take])
            pending, start = pending + take, start + take
            if pending == size:
                yield torch.cat(images), torch.cat(texts)
                images, texts, pending = [], [], 0
    if pending:
        yield torch.cat(images), torch.cat(texts)


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the batch, zero-padding dim 1 to the longest (ViLT's image batches differ
    in token count; padding tokens have mask 0)."""
    if tensors[0].dim() < 2 or len({t.shape[1] for t in tensors}) == 1:
        return torch.cat(tensors)
    longest = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t, (0, 0) * (t.dim() - 2) + (0, longest - t.shape[1])) for t in tensors])


class RetrievalEvaluator:
    """Recall@1/5/10 both ways of a cross-encoder over one split (see the module docstring).

    ``pair_score`` maps ``infer`` features to one score per pair (e.g. the rank head, or the ITM
    "match" logit for a pre-trained model).
    """

    def __init__(
        self,
        model: nn.Module,
        pair_score: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        protocol: str = "exact",
        k_test: int = 128,
        pairs_per_batch: int = 512,
        progress: bool = True,
        ties: str = "expected",
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"retrieval_protocol={protocol!r}; choose one of {list(PROTOCOLS)}")
        if protocol == "fast" and not hasattr(model, "itc_head"):
            raise ValueError(
                "retrieval_protocol=fast ranks candidates with the ITC embeddings, but the model has "
                "no itc_head: train with loss_names.itc=1, or use retrieval_protocol=exact"
            )
        if k_test < 1 or pairs_per_batch < 1:
            raise ValueError(f"k_test={k_test} and eval_pairs_per_batch={pairs_per_batch} must be >= 1")
        self.model, self.pair_score = model, pair_score
        self.protocol, self.k_test, self.pairs_per_batch = protocol, k_test, pairs_per_batch
        self.progress = progress and distributed.is_main()
        self.ties = ties
        self.stats: dict[str, float] = {}

    # ----- stages -----------------------------------------------------------------------------

    def _embed_local_images(self, image_loader) -> tuple[list[int], dict[str, torch.Tensor], torch.Tensor | None]:
        device = next(self.model.parameters()).device
        rows, parts, itc = [], [], []
        for batch in image_loader:
            batch = move_to_device(batch, device)
            embeds = self.model.embed_image(batch["image"], mask_image=False)
            parts.append(embeds)
            rows += batch["img_index"].tolist()
            if self.protocol == "fast":
                itc.append(self.model.itc_head.embed_image(self.model.image_only_feats(embeds)).float())
        if not parts:
            raise ValueError("this process received no images to evaluate; use fewer processes than images")
        cache = {key: _cat_padded([part[key] for part in parts]) for key in parts[0]}
        return rows, cache, torch.cat(itc) if itc else None

    def _itc_texts(self, texts: RetrievalTexts) -> torch.Tensor:
        """ITC embeddings of every caption; each process computes its share, then all gather."""
        rank, world = distributed.get_rank(), distributed.get_world_size()
        mine = torch.arange(rank, len(texts.ids), world, device=texts.ids.device)
        parts = []
        for start in range(0, len(mine), TEXT_BATCH):
            index = mine[start:start + TEXT_BATCH]
            feats = self.model.text_only_feats(texts.ids[index], texts.masks[index])
            parts.append(self.model.itc_head.embed_text(feats).float())
        local = torch.cat(parts) if parts else torch.zeros(0, 1, device=texts.ids.device)
        gathered = distributed.all_gather_object(local.cpu())
        full = torch.empty(len(texts.ids), gathered[0].shape[1])
        for r, part in enumerate(gathered):
            full[r::world] = part
        return full.to(texts.ids.device)

    def _score(self, cache: dict[str, torch.Tensor], texts: RetrievalTexts,
               candidates: Callable[[int], torch.Tensor], num_pairs: int) -> torch.Tensor:
        """(local images, T) cross-encoder scores of the candidate pairs, -inf elsewhere."""
        num_local = next(iter(cache.values())).shape[0]
        scores = torch.full((num_local, len(texts.ids)), float("-inf"), device=texts.ids.device)
        bar = tqdm(total=num_pairs, unit="pair", unit_scale=True, desc=f"retrieval ({self.protocol})",
                   disable=not self.progress, dynamic_ncols=True)
        for images, chosen in _pair_chunks(candidates, num_local, self.pairs_per_batch):
            features = self.model.infer(texts.ids[chosen], texts.masks[chosen], image_embeds=_select(cache, images))
            scores[images, chosen] = self.pair_score(features).float().flatten()
            bar.update(len(images))
        bar.close()
        return scores.cpu()

    # ----- whole evaluation -------------------------------------------------------------------

    def evaluate(self, image_loader, texts: RetrievalTexts) -> dict[str, float]:
        """Recall metrics (``ir_r1`` .. ``tr_r10``, ``r_mean``), plus ``itc_*`` first-stage recall
        for ``fast``, and ``num_images``, ``num_texts``, ``pairs_scored``, ``pairs_per_s``, ``seconds``."""
        started = time.perf_counter()
        device = next(self.model.parameters()).device
        texts = texts.to(device)
        num_texts = len(texts.ids)
        rows, cache, itc_images = self._embed_local_images(image_loader)
        all_rows = distributed.all_gather_object(rows)
        offset = sum(len(part) for part in all_rows[:distributed.get_rank()])
        global_rows = torch.tensor([row for part in all_rows for row in part])

        itc_metrics: dict[str, float] = {}
        if self.protocol == "exact":
            everything = torch.arange(num_texts, device=device)
            candidates = lambda image: everything  # noqa: E731
            num_pairs = len(rows) * num_texts
            tr_keep = ir_keep = None
        else:
            itc_texts = self._itc_texts(texts)
            itc_all_images = torch.cat([part.to(device) for part in distributed.all_gather_object(itc_images.cpu())])
            similarity = itc_all_images @ itc_texts.t()
            itc_metrics = {f"itc_{k}": v for k, v in self._recall(similarity.cpu(), global_rows, texts, self.ties).items()}
            tr_keep = self._top_mask(similarity, dim=1)
            ir_keep = self._top_mask(similarity, dim=0)
            local_keep = (tr_keep | ir_keep)[offset:offset + len(rows)]
            candidates = lambda image: local_keep[image].nonzero().flatten()  # noqa: E731
            num_pairs = int(local_keep.sum())

        local_scores = self._score(cache, texts, candidates, num_pairs)
        total_pairs = int(distributed.all_reduce_sum(torch.tensor([num_pairs], device=device)).item())
        scores = torch.cat(distributed.all_gather_object(local_scores))
        if tr_keep is None:
            metrics = self._recall(scores, global_rows, texts, self.ties)
        else:
            tr = self._recall(torch.where(tr_keep.cpu(), scores, float("-inf")), global_rows, texts, self.ties)
            ir = self._recall(torch.where(ir_keep.cpu(), scores, float("-inf")), global_rows, texts, self.ties)
            metrics = {**{k: v for k, v in ir.items() if k.startswith("ir_")},
                       **{k: v for k, v in tr.items() if k.startswith("tr_")}}
            recalls = [v for k, v in metrics.items() if k.startswith(("ir_", "tr_"))]
            metrics["r_mean"] = sum(recalls) / len(recalls)
        seconds = time.perf_counter() - started
        return {**metrics, **itc_metrics, "num_images": float(len(set(global_rows.tolist()))),
                "num_texts": float(num_texts), "pairs_scored": float(total_pairs),
                "pairs_per_s": total_pairs / seconds if seconds > 0 else 0.0, "seconds": seconds}

    def _top_mask(self, similarity: torch.Tensor, dim: int) -> torch.Tensor:
        """Bool mask of each query's ``k_test`` best candidates along ``dim``."""
        _, index = topk_candidates(similarity, self.k_test, dim=dim)
        return torch.zeros_like(similarity, dtype=torch.bool).scatter(dim, index, True)

    @staticmethod
    def _recall(scores: torch.Tensor, rows: torch.Tensor, texts: RetrievalTexts, ties: str) -> dict[str, float]:
        """Recall over the first occurrence of each image row (a row seen twice, because a broken
        image was replaced, counts once); captions whose image is absent are left out."""
        first = {}
        for position, row in enumerate(rows.tolist()):
            first.setdefault(row, position)
        keep_rows = torch.tensor(sorted(first.values()))
        text_rows = texts.image_rows.cpu()
        kept_texts = torch.isin(text_rows, rows[keep_rows])
        return recall_at_k(scores[keep_rows][:, kept_texts], text_rows[kept_texts], image_ids=rows[keep_rows], ties=ties)

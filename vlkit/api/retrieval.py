"""Retrieval over a gallery in both directions, as the evaluator's ``fast`` protocol: the ITC
embeddings pick each query's ``k_test`` best candidates (every candidate without an ITC head), the
cross-encoder re-scores them (``rank_output``, else the ITM match logit) and the ``k`` best come
back. Gallery embeddings are computed once, can be saved to a safetensors file and reused."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from vlkit.api.inputs import as_list
from vlkit.api.model import VLModel, chunks

LARGE_GALLERY = 256
"""Galleries (or query sets) at least this large show a progress bar unless told otherwise."""


def _bar(total: int, desc: str, progress: bool | None) -> tqdm:
    show = total >= LARGE_GALLERY if progress is None else progress
    return tqdm(total=total, desc=desc, unit="item", disable=not show, dynamic_ncols=True)


def image_embeds(model: VLModel, images: Any, progress: bool | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The fusion inputs of every image (``embed_image``) and their ITC embeddings (None without ITC)."""
    items = as_list(images, "images")
    parts, itc = [], []
    bar = _bar(len(items), "embedding images", progress)
    with model._context():
        for part in chunks(len(items)):
            batch = model._images(items[part])
            if batch.pixel_mask is not None:
                embeds = model.model.embed_image(batch.pixels, batch.pixel_mask)
            else:
                embeds = model.model.embed_image(batch.pixels, mask_image=False)
            parts.append({key: value.float() for key, value in embeds.items()})
            if hasattr(model.model, "itc_head"):
                itc.append(model.model.itc_head.embed_image(model.model.image_only_feats(embeds)).float())
            bar.update(len(batch.pixels))
    bar.close()
    cache = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    return cache, torch.cat(itc) if itc else None


def text_embeds(model: VLModel, texts: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    ids, masks = model._texts(texts)
    itc = None
    if hasattr(model.model, "itc_head"):
        with model._context():
            itc = torch.cat([model._embed_texts(ids[part], masks[part]) for part in chunks(len(ids))])
    return ids, masks, itc


@dataclass
class Gallery:
    """Precomputed gallery: images (``image_embeds``) or texts (token ids and masks), with ITC vectors."""

    kind: str
    tensors: dict[str, torch.Tensor]

    @classmethod
    def build(cls, model: VLModel, images: Any = None, progress: bool | None = None, texts: Any = None) -> Gallery:
        if (images is None) == (texts is None):
            raise ValueError("a gallery holds images or texts: give exactly one")
        if images is not None:
            cache, itc = image_embeds(model, images, progress)
            tensors = {f"embed.{key}": value for key, value in cache.items()}
            kind = "images"
        else:
            ids, masks, itc = text_embeds(model, texts)
            tensors, kind = {"text_ids": ids, "text_masks": masks}, "texts"
        if itc is not None:
            tensors["itc"] = itc
        return cls(kind, {key: value.detach().cpu().contiguous() for key, value in tensors.items()})

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def save(self, path: str | os.PathLike) -> None:
        save_file(self.tensors, str(path), metadata={"kind": self.kind})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Gallery:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            kind = (handle.metadata() or {}).get("kind")
        if kind not in ("images", "texts"):
            raise ValueError(f"{path} is not a vlkit gallery file (metadata kind={kind!r})")
        return cls(kind, load_file(str(path)))

    def image_embeds(self, index: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        return {key[len("embed."):]: value[index].to(device) for key, value in self.tensors.items()
                if key.startswith("embed.")}


def _candidates(query_itc: torch.Tensor | None, gallery_itc: torch.Tensor | None, size: int, k_test: int) -> torch.Tensor:
    """(Q, C) gallery positions each query's cross-encoder scores: ITC's ``k_test`` best, or all."""
    if query_itc is None or gallery_itc is None:
        return torch.arange(size).expand(1 if query_itc is None else len(query_itc), size)
    similarity = query_itc.cpu() @ gallery_itc.cpu().t()
    return similarity.topk(min(k_test, size), dim=1).indices


def _rank(model: VLModel, pairs: list[tuple[int, int]], score_pair) -> dict[tuple[int, int], float]:
    scores = {}
    with model._context():
        for part in chunks(len(pairs)):
            chosen = pairs[part]
            values = score_pair([q for q, _ in chosen], [g for _, g in chosen])
            scores.update(zip(chosen, values.tolist()))
    return scores


def retrieve(model: VLModel, texts: Any = None, images: Any = None, k: int = 10, gallery: Gallery | None = None,
             query: str = "texts", progress: bool | None = None) -> list[list[dict[str, Any]]]:
    """Texts and images: the ``query`` side searches the other (``texts``: text → image). With a
    ``gallery`` (``Gallery.build`` / ``Gallery.load``) give only the queries. Returns per query the
    ``k`` best gallery items ``{"index", "score"}`` (cross-encoder score), best first."""
    if k < 1:
        raise ValueError(f"retrieve: k={k}; ask for at least one result")
    if query not in ("texts", "images"):
        raise ValueError(f"retrieve: query={query!r}; choose 'texts' (text to image) or 'images' (image to text)")
    if gallery is None:
        if texts is None or images is None:
            raise ValueError("retrieve: give texts and images (queries and gallery), or queries and a gallery")
        gallery = (Gallery.build(model, images=images, progress=progress) if query == "texts"
                   else Gallery.build(model, texts=texts))
    if gallery.kind == "images":
        if texts is None:
            raise ValueError("retrieve: an image gallery needs texts to query it")
        ids, masks, itc = text_embeds(model, texts)
        candidates = _candidates(itc, gallery.tensors.get("itc"), len(gallery), int(model.cfg.k_test))

        def score_pair(queries, items):
            embeds = gallery.image_embeds(torch.tensor(items), model.device)
            features = model.model.infer(ids[queries], masks[queries], image_embeds=embeds)
            return _pair_score(model, features)
    else:
        if images is None:
            raise ValueError("retrieve: a text gallery needs images to query it")
        cache, itc = image_embeds(model, images, progress)
        candidates = _candidates(itc, gallery.tensors.get("itc"), len(gallery), int(model.cfg.k_test))
        ids, masks = (gallery.tensors[key].to(model.device) for key in ("text_ids", "text_masks"))

        def score_pair(queries, items):
            embeds = {key: value[torch.tensor(queries, device=value.device)] for key, value in cache.items()}
            features = model.model.infer(ids[items], masks[items], image_embeds=embeds)
            return _pair_score(model, features)

    num_queries = len(as_list(texts if gallery.kind == "images" else images, "queries"))
    candidates = candidates.expand(num_queries, -1) if len(candidates) == 1 else candidates
    pairs = [(q, int(g)) for q in range(num_queries) for g in candidates[q].tolist()]
    bar = _bar(len(pairs), "re-ranking pairs", progress)
    scores = {}
    for part in chunks(len(pairs), 512):
        scores.update(_rank(model, pairs[part], score_pair))
        bar.update(part.stop - part.start)
    bar.close()
    results = []
    for q in range(num_queries):
        ranked = sorted(((scores[(q, int(g))], int(g)) for g in candidates[q].tolist()), reverse=True)[:k]
        results.append([{"index": g, "score": s} for s, g in ranked])
    return results


def _pair_score(model: VLModel, features: dict[str, torch.Tensor]) -> torch.Tensor:
    if hasattr(model.model, "rank_output"):
        return model.model.rank_output(features["cls_feats"])[:, 0].float()
    return model.head("itm_score")(features["cls_feats"])[:, 1].float()

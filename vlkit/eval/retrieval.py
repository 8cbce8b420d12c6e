"""Image/text retrieval recall@K from a full (num_images, num_texts) score matrix (fact sheet §6.3).

* **Text retrieval** (``tr_r@k``): for each image (row), is any of its texts among the top-k
  texts of that row? Averaged over images.
* **Image retrieval** (``ir_r@k``): for each text (column), is its image among the top-k images
  of that column? Averaged over texts.

Ties at the cut follow ``ties`` (the ``recall_ties`` config key; ``RECALL_TIES``). Let a query's
best true candidate score ``s``, ``a`` wrong candidates score above ``s`` and ``w`` wrong and ``p``
true candidates score exactly ``s``:

* ``expected`` (default): the expected recall under uniform random tie-breaking, i.e. the
  probability that a true candidate of the tied group lands among the first ``k - a`` places of
  that group, ``1 - C(w, k - a) / C(w + p, k - a)``. A caption string shared by several images (COCO
  has such duplicates) then scores what a fair coin would give it, not 0.
* ``pessimistic``: tied wrong candidates rank first (hit when ``a + w < k``), vlkit's earlier rule.
* ``optimistic``: tied true candidates rank first (hit when ``a < k``).

Without ties at the cut all three agree with the reference's top-k membership test, and no
convention depends on ``torch.topk``'s implementation-defined tie order.

An image with no text is a miss for every k in text retrieval (it stays in the denominator, as
in the reference). All values are Python floats, fractions in [0, 1].
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["RECALL_TIES", "recall_at_k", "scatter_candidate_scores", "topk_candidates"]

RECALL_TIES = ("expected", "pessimistic", "optimistic")
"""Tie conventions of :func:`recall_at_k`."""


def _as_long(ids: Sequence[int] | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(ids)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {tuple(t.shape)}")
    if t.numel() and (t.dtype.is_floating_point or t.dtype == torch.bool):
        raise TypeError(f"{name} must hold integers; got {t.dtype}")
    return t.long()


def positive_mask(
    num_images: int,
    image_ids_of_texts: Sequence[int] | torch.Tensor,
    image_ids: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """(num_images, num_texts) bool mask, True where the text belongs to the image.

    Without ``image_ids`` the entries of ``image_ids_of_texts`` are row indices in
    ``[0, num_images)``. With ``image_ids`` (one id per row, repeats allowed) they are matched
    against those ids. Every text must belong to at least one row.
    """
    text_ids = _as_long(image_ids_of_texts, "image_ids_of_texts")
    if image_ids is None:
        if text_ids.numel() and (int(text_ids.min()) < 0 or int(text_ids.max()) >= num_images):
            raise ValueError(
                f"image_ids_of_texts must be row indices in [0, {num_images}); "
                f"got range [{int(text_ids.min())}, {int(text_ids.max())}]"
            )
        row_ids = torch.arange(num_images)
    else:
        row_ids = _as_long(image_ids, "image_ids")
        if row_ids.numel() != num_images:
            raise ValueError(f"image_ids has {row_ids.numel()} entries for {num_images} rows")
    mask = row_ids[:, None] == text_ids[None, :]
    if text_ids.numel() and not bool(mask.any(dim=0).all()):
        missing = text_ids[~mask.any(dim=0)].unique().tolist()[:10]
        raise ValueError(f"texts refer to images not among the rows: {missing}")
    return mask


def _hit_probability(scores: torch.Tensor, mask: torch.Tensor, dim: int, ks: Sequence[int],
                     ties: str) -> dict[int, torch.Tensor]:
    """Per query along ``dim`` and per k: the probability (0/1 unless ``ties=expected``) that a
    true candidate is among the top k. Queries without a true candidate never hit."""
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    best_true = torch.where(mask, scores, neg_inf).amax(dim=dim, keepdim=True)
    above = ((scores > best_true) & ~mask).sum(dim=dim).double()
    tied_wrong = ((scores == best_true) & ~mask).sum(dim=dim).double()
    tied_true = ((scores == best_true) & mask).sum(dim=dim).double()
    has_true = mask.any(dim=dim)
    out = {}
    for k in ks:
        if ties == "pessimistic":
            hit = (above + tied_wrong < k).double()
        elif ties == "optimistic":
            hit = (above < k).double()
        else:
            places = (k - above).clamp(min=0)  # places of the tied group inside the top k
            # P(no true candidate in the first `places` of a random order of the tied group)
            all_wrong = torch.exp(_log_comb(tied_wrong, places) - _log_comb(tied_wrong + tied_true, places))
            hit = torch.where(places > tied_wrong, torch.ones_like(places), 1 - all_wrong)
        out[k] = torch.where(has_true, hit, torch.zeros_like(hit))
    return out


def _log_comb(n: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """log C(n, m) for m <= n (float64; callers mask the other entries)."""
    m = torch.minimum(m, n)
    return torch.lgamma(n + 1) - torch.lgamma(m + 1) - torch.lgamma(n - m + 1)


def recall_at_k(
    scores: torch.Tensor,
    image_ids_of_texts: Sequence[int] | torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    image_ids: Sequence[int] | torch.Tensor | None = None,
    ties: str = "expected",
) -> dict[str, float]:
    """Recall@k for image retrieval (``ir_r{k}``) and text retrieval (``tr_r{k}``), plus ``r_mean``.

    ``scores``: (num_images, num_texts), higher is better. ``image_ids_of_texts``: for each text
    its image, as a row index (or as an id from ``image_ids``, one per row). ``r_mean`` is the
    mean of all the returned recalls. ``ties``: see the module docstring. NaN scores are rejected.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (num_images, num_texts); got shape {tuple(scores.shape)}")
    if ties not in RECALL_TIES:
        raise ValueError(f"recall_ties={ties!r}; choose one of {list(RECALL_TIES)}")
    num_images, num_texts = scores.shape
    if num_images == 0 or num_texts == 0:
        raise ValueError(f"scores must be non-empty; got shape {tuple(scores.shape)}")
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers; got {ks}")
    if len(_as_long(image_ids_of_texts, "image_ids_of_texts")) != num_texts:
        raise ValueError(
            f"image_ids_of_texts has {len(image_ids_of_texts)} entries for {num_texts} texts"
        )
    scores = scores.detach()
    if not scores.is_floating_point():
        scores = scores.float()
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    mask = positive_mask(num_images, image_ids_of_texts, image_ids).to(scores.device)

    tr_hit = _hit_probability(scores, mask, dim=1, ks=ks, ties=ties)  # per image
    ir_hit = _hit_probability(scores, mask, dim=0, ks=ks, ties=ties)  # per text
    out: dict[str, float] = {}
    for k in ks:
        out[f"ir_r{k}"] = float(ir_hit[k].mean())
    for k in ks:
        out[f"tr_r{k}"] = float(tr_hit[k].mean())
    out["r_mean"] = sum(out.values()) / len(out)
    return out


def topk_candidates(scores: torch.Tensor, k: int, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k candidates along ``dim`` with a deterministic order: by score, then lower index first.

    For re-ranking: with ``dim=1`` each image row gets its k best texts (text retrieval), with
    ``dim=0`` each text column its k best images. ``k`` is clipped to the number of candidates.
    Returns ``(values, indices)`` shaped like ``scores`` with ``dim`` reduced to k.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D; got shape {tuple(scores.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    k = min(k, scores.shape[dim])
    values, indices = torch.sort(scores, dim=dim, descending=True, stable=True)
    return values.narrow(dim, 0, k), indices.narrow(dim, 0, k)


def scatter_candidate_scores(
    shape: tuple[int, int],
    indices: torch.Tensor,
    candidate_scores: torch.Tensor,
    dim: int = 1,
    fill: float = float("-inf"),
) -> torch.Tensor:
    """Full (num_images, num_texts) matrix from re-ranked candidate scores; ``fill`` elsewhere.

    ``indices`` and ``candidate_scores`` are as returned by :func:`topk_candidates` (the scores
    replaced by the re-ranker's). The result can go straight into :func:`recall_at_k`; with the
    default ``-inf`` fill, candidates outside the top-k rank last (tied among themselves).
    """
    if indices.shape != candidate_scores.shape:
        raise ValueError(
            f"indices {tuple(indices.shape)} and candidate_scores "
            f"{tuple(candidate_scores.shape)} differ in shape"
        )
    dtype = candidate_scores.dtype if candidate_scores.is_floating_point() else torch.float32
    full = torch.full(shape, fill, dtype=dtype, device=candidate_scores.device)
    return full.scatter(dim, indices.to(full.device), candidate_scores.to(dtype))

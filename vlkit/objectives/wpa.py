"""Word-patch alignment (WPA), the optimal-transport term of ITM (fact sheet §3.3).

Each text/image pair gets a transport distance between its word features and its patch features:
cost C = 1 - cosine, plan T from IPOT (proximal-point optimal transport, Xie et al. 2018), distance
sum(C * T). The plan is a constant (no gradient); gradients reach the features through C only. All
pairs of the batch are solved at once; padded positions take no part.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

COSINE_EPS = 1e-5
IPOT_BETA = 0.5
IPOT_ITERATIONS = 50
IPOT_INNER_STEPS = 1
PAD_PENALTY = 1e4
"""Added to the denominators of padded positions so that their scaling stays finite."""


def alignment_masks(
    text_masks: torch.Tensor, image_masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool masks of the positions that are aligned.

    Text: real tokens except position 0 ([CLS]) and the last real token ([SEP]). Image: real
    patches except position 0 (the image CLS). A pair left with no position on one side is
    dropped entirely (both masks all False), which makes its distance 0.
    """
    text_valid = text_masks.bool().clone()
    positions = torch.arange(text_valid.shape[1], device=text_valid.device)
    last_real = torch.where(text_valid, positions, -1).amax(dim=1, keepdim=True)
    text_valid &= positions != last_real
    text_valid[:, 0] = False
    image_valid = image_masks.bool().clone()
    image_valid[:, 0] = False
    pair_kept = (text_valid.any(dim=1) & image_valid.any(dim=1)).unsqueeze(1)
    return text_valid & pair_kept, image_valid & pair_kept


def cosine_cost(text_feats: torch.Tensor, image_feats: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """(B, Lt, Li) cost 1 - cos(t_i, v_j); vectors are L2-normalised with norm floor ``eps``."""
    text_unit = F.normalize(text_feats, p=2, dim=-1, eps=eps)
    image_unit = F.normalize(image_feats, p=2, dim=-1, eps=eps)
    return 1 - text_unit @ image_unit.transpose(1, 2)


@torch.no_grad()
def ipot_plan(
    cost: torch.Tensor,
    text_valid: torch.Tensor,
    image_valid: torch.Tensor,
    beta: float = IPOT_BETA,
    iterations: int = IPOT_ITERATIONS,
    inner_steps: int = IPOT_INNER_STEPS,
) -> torch.Tensor:
    """(B, Lt, Li) IPOT transport plan between uniform word and patch marginals.

    Each iteration rescales Q = exp(-C/beta) * T (the previous plan) so that its text marginal is
    1/n_text (exact after every iteration) and its image marginal tends to 1/n_image. Entries on a
    padded word or patch are 0.
    """
    pair_valid = text_valid.unsqueeze(2) & image_valid.unsqueeze(1)
    dtype = cost.dtype
    n_text = text_valid.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)
    n_image = image_valid.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)
    text_pad_penalty = (~text_valid).to(dtype) * PAD_PENALTY
    image_pad_penalty = (~image_valid).to(dtype) * PAD_PENALTY
    kernel = torch.where(pair_valid, torch.exp(-cost.detach() / beta), 0.0)
    plan = pair_valid.to(dtype)
    text_scale = text_valid.to(dtype) / n_text
    for _ in range(iterations):
        proximal = kernel * plan
        for _ in range(inner_steps):
            image_mass = torch.einsum("bti,bt->bi", proximal, text_scale)
            image_scale = 1 / (n_image * image_mass + image_pad_penalty)
            text_mass = torch.einsum("bti,bi->bt", proximal, image_scale)
            text_scale = 1 / (n_text * text_mass + text_pad_penalty)
        plan = text_scale.unsqueeze(2) * proximal * image_scale.unsqueeze(1)
    return torch.where(pair_valid, plan, 0.0)


def wpa_distances(
    text_feats: torch.Tensor,
    image_feats: torch.Tensor,
    text_masks: torch.Tensor,
    image_masks: torch.Tensor,
) -> torch.Tensor:
    """(B,) transport distance of each pair, in fp32 with autocast disabled.

    ``text_feats`` (B, Lt, D) and ``image_feats`` (B, Li, D) are the fused encoder's outputs,
    ``text_masks`` (B, Lt) and ``image_masks`` (B, Li) their attention masks (1 = real).
    """
    if text_feats.shape[:2] != text_masks.shape or image_feats.shape[:2] != image_masks.shape:
        raise ValueError(
            f"features and masks disagree: text {tuple(text_feats.shape)} vs {tuple(text_masks.shape)}, "
            f"image {tuple(image_feats.shape)} vs {tuple(image_masks.shape)}; masks must be (B, L) "
            f"for (B, L, D) features"
        )
    with torch.autocast(device_type=text_feats.device.type, enabled=False):
        cost = cosine_cost(text_feats.float(), image_feats.float())
        text_valid, image_valid = alignment_masks(text_masks, image_masks)
        plan = ipot_plan(cost, text_valid, image_valid)
        pair_valid = text_valid.unsqueeze(2) & image_valid.unsqueeze(1)
        return torch.where(pair_valid, cost, 0.0).mul(plan).sum(dim=(1, 2))


def wpa_loss(
    text_feats: torch.Tensor,
    image_feats: torch.Tensor,
    text_masks: torch.Tensor,
    image_masks: torch.Tensor,
    itm_labels: torch.Tensor,
) -> torch.Tensor:
    """(sum of distances of matched pairs - sum over mismatched pairs) / B, unweighted.

    ``itm_labels`` is (B,) with 1 = matched pair. The caller multiplies by ``wpa_weight``.
    """
    batch_size = text_feats.shape[0]
    if itm_labels.shape != (batch_size,):
        raise ValueError(
            f"itm_labels must be ({batch_size},) for this batch; got shape {tuple(itm_labels.shape)}"
        )
    distances = wpa_distances(text_feats, image_feats, text_masks, image_masks)
    signed = torch.where(itm_labels.to(distances.device) == 1, distances, -distances)
    return signed.sum() / batch_size

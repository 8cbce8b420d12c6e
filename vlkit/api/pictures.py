"""Pictures of what a loaded model does, as PNG bytes: the ELIP kept-token overlay, the
word-to-patch alignment map (single-stream models), retrieval results and MAE reconstructions."""
from __future__ import annotations

import io
import math
import os
import tempfile
from typing import Any, Sequence

import numpy as np
import torch

from vlkit.api.model import VLModel
from vlkit.models.masking import unpatchify
from vlkit.models.token_reduction import token_pruners
from vlkit.objectives.wpa import alignment_masks, cosine_cost, ipot_plan
from vlkit.viz.elip import display_image, draw

ALIGN_WORDS = 6
"""Words shown in an alignment map (the first ones of the text)."""


def _pyplot():
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="vlkit_mpl_"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    _pyplot().close(figure)
    return buffer.getvalue()


def prunes_tokens(model: VLModel) -> bool:
    """Whether the model prunes image tokens (ELIP) when it evaluates."""
    return any(pruner.active() for pruner in token_pruners(model.model))


def elip_png(model: VLModel, image: Any, text: str) -> bytes:
    """ELIP's kept and merged patches at each stage for (image, text) (``vlkit viz elip``'s picture)."""
    if not prunes_tokens(model):
        raise ValueError("this model prunes no image tokens: train it with an ELIP preset (elip_*)")
    batch = model.preprocess.images([image])
    ids, masks = model.preprocess.texts([text])
    with torch.inference_mode():
        model.infer(ids.to(model.device), masks.to(model.device), batch.to(model.device))
    trace = next(pruner for pruner in token_pruners(model.model) if pruner.active()).last_trace
    with tempfile.TemporaryDirectory(prefix="vlkit_elip_") as folder:
        path = os.path.join(folder, "elip.png")
        draw(trace, batch.pixels[0], text, path)
        with open(path, "rb") as handle:
            return handle.read()


def alignment(model: VLModel, image: Any, text: str) -> tuple[list[str], np.ndarray]:
    """The words of ``text`` and, per word, its optimal-transport mass over the patch grid
    (W, G, G): the IPOT plan between fused word and patch features (ViLT's word-patch alignment)."""
    if model.cfg.model != "single_stream":
        raise ValueError(f"alignment maps are drawn for single-stream models (VLC / ViLT); this is {model.cfg.model}")
    batch = model.preprocess.images([image]).to(model.device)
    ids, masks = (t.to(model.device) for t in model.preprocess.texts([text]))
    with torch.inference_mode():
        features = model.infer(ids, masks, batch)
        text_valid, image_valid = alignment_masks(features["text_masks"], features["image_masks"])
        plan = ipot_plan(cosine_cost(features["text_feats"].float(), features["image_feats"].float()),
                         text_valid, image_valid)[0]
    positions = text_valid[0].nonzero().flatten().tolist()
    patches = plan.shape[1] - 1
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise ValueError(f"the model kept {patches} image tokens, not a square grid (token pruning?)")
    tokens = model.tokenizer.convert_ids_to_tokens(ids[0, positions].tolist())
    maps = plan[positions, 1:].reshape(len(positions), grid, grid).float().cpu().numpy()
    return tokens, maps


def alignment_png(model: VLModel, image: Any, text: str) -> bytes:
    """The image, then one panel per word with its alignment mass over the patches."""
    tokens, maps = alignment(model, image, text)
    tokens, maps = tokens[:ALIGN_WORDS], maps[:ALIGN_WORDS]
    picture = display_image(model.preprocess.images([image]).pixels[0])
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(tokens) + 1, figsize=(2.4 * (len(tokens) + 1), 2.8), squeeze=False)
    axes[0, 0].imshow(picture)
    axes[0, 0].set_title("input", fontsize=9)
    size = picture.shape[0]
    for axis, token, mass in zip(axes[0, 1:], tokens, maps):
        axis.imshow(picture)
        axis.imshow(mass / max(mass.max(), 1e-12), cmap="magma", alpha=0.6, extent=(0, size, size, 0),
                    interpolation="nearest")
        axis.set_title(token, fontsize=9)
    for axis in axes[0]:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"word-to-patch alignment (optimal transport) for “{text}”", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def retrieval_png(model: VLModel, texts: Sequence[str], images: Sequence[Any], k: int = 5) -> bytes:
    """One row per text query: the query, then its top-``k`` images with their scores."""
    results = model.retrieve(texts=list(texts), images=list(images), k=k)
    plt = _pyplot()
    columns = min(k, len(images))
    figure, axes = plt.subplots(len(texts), columns + 1, figsize=(2.2 * (columns + 1), 2.3 * len(texts)),
                                squeeze=False)
    for row, (text, hits) in enumerate(zip(texts, results)):
        axes[row, 0].text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
        axes[row, 0].axis("off")
        for column in range(columns):
            axis = axes[row, column + 1]
            axis.axis("off")
            if column < len(hits):
                hit = hits[column]
                axis.imshow(display_image(model.preprocess.images([images[hit["index"]]]).pixels[0]))
                axis.set_title(f"#{column + 1}: {hit['score']:.2f}", fontsize=8)
    figure.suptitle("retrieval: each text's best images (cross-encoder score)", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def mae_reconstruction(model: VLModel, image: Any, text: str = "", seed: int = 0) -> dict[str, torch.Tensor]:
    """MAE on one image (``mask_ratio`` of the patches dropped, seeded): ``masked`` input (removed
    patches zero), ``prediction`` (decoded patches, the visible ones pasted back) and ``target``
    (the model's input), each (3, S, S) in the input's normalisation, and ``removed`` (N,) 1/0."""
    if not hasattr(model.model, "mae_predict"):
        raise ValueError(f"the {model.cfg.model} family has no MAE decoder")
    batch = model.preprocess.images([image])
    ids, masks = model.preprocess.texts([text])
    pixels = batch.pixels
    torch.manual_seed(seed)
    with torch.inference_mode():
        features = model.model.infer(ids.to(model.device), masks.to(model.device), pixels.to(model.device),
                                     mask_image=True)
        if "mae_ids_restore" not in features:
            raise ValueError("the model did not drop patches (mask_ratio is 0)")
        predicted = model.model.mae_predict(features["image_feats"], features["mae_ids_restore"]).float().cpu()
    target = model.model.patchify(pixels).float()
    if model.cfg.get("norm_pix_loss", False):  # the decoder predicts per-patch normalised pixels
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        predicted = predicted * (var + 1e-6).sqrt() + mean
    removed = features["mae_mask"].float().cpu()[..., None]
    pasted = predicted * removed + target * (1 - removed)
    panels = {"masked": target * (1 - removed), "prediction": pasted, "target": target}
    return {**{name: unpatchify(value, model.cfg.patch_size)[0] for name, value in panels.items()},
            "removed": removed[0, :, 0]}


def mae_png(model: VLModel, image: Any, text: str = "") -> bytes:
    panels = mae_reconstruction(model, image, text)
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
    for axis, name in zip(axes, ("masked", "prediction", "target")):
        axis.imshow(display_image(panels[name]))
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    figure.suptitle(f"MAE reconstruction ({model.cfg.mask_ratio:.0%} of the patches masked)", fontsize=9)
    figure.tight_layout()
    return _png(figure)

"""A short CLIP-style contrastive pre-training of a small CLIP ResNet and text tower on CLIP-ViL's
pre-training captions: the tiny analogue of the CLIP weights the published CLIP-ViL starts from
(docs/results.md §7.5).

open_clip builds the model (``CLIP`` with a ``ModifiedResNet`` image tower and a small causal text
transformer pooled at [SEP]) and gives the loss (``ClipLoss``). Images go through CLIP-ViL's own
canvas (``ResizePadNormalize``), padded to a square for the attention pool; texts through vlkit's
tokenizer. The saved file is the model's state dict, in OpenAI CLIP's key names (``visual.*``,
``transformer.*``, ...), which ``clip_path`` (``--clip_path``) reads into ``clipvil``'s ResNet.
"""
from __future__ import annotations

import logging
import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from vlkit.data.canvas import ResizePadNormalize
from vlkit.data.datasets.lxmert import LxmertImages
from vlkit.data.lxmert import pretrain_sentences
from vlkit.data.tokenizer import encode_text, load_tokenizer
from vlkit.engine.progress import ProgressBar
from vlkit.utils.atomic import atomic_torch_save

log = logging.getLogger(__name__)


@dataclass
class ContrastiveConfig:
    """What the warm-up reads, builds and runs. ``layers`` / ``width`` / ``image_size_*`` must be
    the CLIP-ViL model's (``clip_layers``, ``clip_width``, ``image_size_min`` / ``_max``)."""

    data_root: str
    tokenizer: str
    output: str
    layers: Sequence[int] = (1, 1, 1, 1)
    width: int = 8
    image_size_min: int = 96
    image_size_max: int = 160
    train: Sequence[str] = ("mscoco_train", "mscoco_nominival", "vgnococo")
    valid: Sequence[str] = ("mscoco_minival",)
    embed_dim: int = 64
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    context_length: int = 32
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_ratio: float = 0.1
    seed: int = 0
    progress_bar: bool = True


@dataclass
class CaptionImages:
    """Every image with captions in a split: square canvases (N, 3, S, S) and each image's
    tokenized captions (N lists of (L,) id tensors)."""

    images: torch.Tensor
    captions: list[list[torch.Tensor]]


def read_split(cfg: ContrastiveConfig, names: Sequence[str], tokenizer) -> CaptionImages:
    """The captions (sentences of unlabelled sources: ``mscoco``, ``vg``) of ``lxmert/<name>.json``
    and their images, each on CLIP-ViL's canvas padded to ``image_size_max`` square."""
    paths = [os.path.join(cfg.data_root, "lxmert", f"{name}.json") for name in names]
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file; data_root must be CLIP-ViL's data folder (holding "
                                    "lxmert/), e.g. the synthetic set's clipvil/ folder")
    by_image: dict[str, list[torch.Tensor]] = defaultdict(list)
    for sentence in pretrain_sentences(paths, None):
        if sentence.label is None:
            by_image[sentence.img_id].append(encode_text(tokenizer, sentence.text, cfg.context_length)["ids"])
    if not by_image:
        raise ValueError(f"{', '.join(paths)} hold no captions (sentences of a source without labels); the "
                         "contrastive warm-up trains on captions only")
    images = LxmertImages(cfg.data_root, ResizePadNormalize(cfg.image_size_min, cfg.image_size_max))
    side = cfg.image_size_max
    canvases = []
    for img_id in by_image:
        image, _ = images.load(img_id)
        top, left = (side - image.shape[1]) // 2, (side - image.shape[2]) // 2
        canvases.append(F.pad(image, (left, side - image.shape[2] - left, top, side - image.shape[1] - top)))
    return CaptionImages(torch.stack(canvases), list(by_image.values()))


def build_clip(cfg: ContrastiveConfig, vocab_size: int, pad_id: int, eos_id: int) -> CLIP:
    """open_clip's ``CLIP``: a ModifiedResNet of ``layers`` / ``width`` (attention pool over an
    ``image_size_max`` square) and a causal text transformer pooled at the [SEP] token."""
    vision = CLIPVisionCfg(layers=tuple(cfg.layers), width=cfg.width, head_width=64, image_size=cfg.image_size_max)
    text = CLIPTextCfg(context_length=cfg.context_length, vocab_size=vocab_size, width=cfg.text_width,
                       heads=cfg.text_heads, layers=cfg.text_layers, pad_id=pad_id, eos_id=eos_id, pool_type="eos")
    return CLIP(cfg.embed_dim, vision, text)


def _texts(data: CaptionImages, rows: Sequence[int], rng: random.Random) -> torch.Tensor:
    return torch.stack([rng.choice(data.captions[row]) for row in rows])


@torch.no_grad()
def retrieval_accuracy(model: CLIP, data: CaptionImages) -> dict[str, float]:
    """Top-1 accuracies among the split's images (BatchNorm in eval mode): each caption's nearest
    image is its own (``text_to_image``); each image's nearest caption is one of its own
    (``image_to_text``)."""
    model.eval()
    images = model.encode_image(data.images, normalize=True)
    owner = torch.tensor([row for row, caps in enumerate(data.captions) for _ in caps])
    texts = model.encode_text(torch.stack([c for caps in data.captions for c in caps]), normalize=True)
    similarity = texts @ images.t()
    model.train()
    return {"text_to_image": (similarity.argmax(1) == owner).float().mean().item(),
            "image_to_text": (owner[similarity.argmax(0)] == torch.arange(len(images))).float().mean().item()}


def train_contrastive(cfg: ContrastiveConfig) -> dict[str, float]:
    """Train for ``cfg.steps`` (batches of distinct images, one random caption each; AdamW with
    linear warm-up and cosine decay), save the state dict to ``cfg.output``; returns the last
    step's loss, the mean over the last tenth of the steps, and the validation retrieval accuracies."""
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise ValueError(f"steps={cfg.steps} and batch_size={cfg.batch_size}: need at least 1 step of 2 images")
    tokenizer = load_tokenizer(cfg.tokenizer)
    train, valid = read_split(cfg, cfg.train, tokenizer), read_split(cfg, cfg.valid, tokenizer)
    if cfg.batch_size > len(train.images):
        raise ValueError(f"batch_size={cfg.batch_size} but the training files hold {len(train.images)} images "
                         "with captions; lower batch_size")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = build_clip(cfg, len(tokenizer), tokenizer.pad_token_id, tokenizer.sep_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, round(cfg.warmup_ratio * cfg.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
        (step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * step / cfg.steps))))
    loss_fn, order, losses = ClipLoss(), [], []
    bar = ProgressBar(cfg.steps, 0, cfg.progress_bar)
    model.train()
    for _ in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order = rng.sample(range(len(train.images)), len(train.images))
        rows, order = order[: cfg.batch_size], order[cfg.batch_size:]
        image_features, text_features, scale = model(train.images[rows], _texts(train, rows, rng))
        loss = loss_fn(image_features, text_features, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        bar.advance(loss=losses[-1])
    bar.close()
    tail = losses[-max(1, len(losses) // 10):]
    result = {"loss": losses[-1], "loss_tail": sum(tail) / len(tail), "first_loss": losses[0],
              **retrieval_accuracy(model, valid), "chance": 1 / len(valid.images)}
    atomic_torch_save(model.state_dict(), cfg.output)
    log.info("contrastive warm-up: %s; CLIP weights in %s", result, cfg.output)
    return result

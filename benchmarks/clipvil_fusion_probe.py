#!/usr/bin/env python
"""Does tiny CLIP-ViL's fusion learn ITM from fixed image features? (docs/results.md §7.5)

The ResNet is loaded from a CLIP file (``--clip``, e.g. ``clip-pretrain``'s) or left random, frozen
with BatchNorm in eval mode, and each image's grid is computed once; the fusion of ``clipvil_tiny``
then trains on ITM (captions only unless ``--all_sentences``; ``--mlm`` adds stage one's MLM) with
AdamW, batch 32. ``--pair_steps N`` first trains N steps of a text-only sentence-pair task through
the ITM head (``[CLS] caption [SEP] caption [SEP]``: the same image's or not), the tiny analogue of
the BERT next-sentence weights the published ITM head starts from. Prints the ITM training loss,
validation ITM accuracy with its blank-image value, and [CLS]'s first-layer attention on the image.

    python benchmarks/clipvil_fusion_probe.py --data runs/clipvil_synthetic/synthetic --clip clip.pt \\
        [--steps 1000] [--pair_steps 1000] [--mlm] [--all_sentences] [--init_std 0.1] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from vlkit.cli.clipvil import build_parser, pretrain_values
from vlkit.config import resolve_config
from vlkit.data.tokenizer import load_tokenizer
from vlkit.objectives import itm_loss
from vlkit.tasks.ablation import blank_images
from vlkit.tasks.clipvil import ClipVilPretrainTask

BATCH, PAIR_TEXT_LEN = 32, 40


class FrozenGrid(nn.Module):
    """The ResNet in eval mode without gradients; each distinct image's grid computed once."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.resnet, self.cache = resnet.eval().requires_grad_(False), {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images:
            key = hash(image.numpy().tobytes())
            if key not in self.cache:
                with torch.no_grad():
                    self.cache[key] = self.resnet(image[None])[0]
            out.append(self.cache[key])
        return torch.stack(out)


def build(args) -> tuple[ClipVilPretrainTask, nn.Module]:
    tokenizer = os.path.join(args.data, "tokenizer")
    flags = ["--llayers", "2", "--xlayers", "0", "--rlayers", "0", "--visualbert_style", "--input_raw_images",
             "--use_clip", "--clip_model_name", "RN50", "--use_positional_embedding", "--taskMatched",
             "--objMaskRate", "0.0", "--train", "mscoco_train,mscoco_nominival,vgnococo", "--valid", "mscoco_minival",
             "--seed", str(args.seed), "--data_root", os.path.join(args.data, "clipvil"),
             "--tokenizer", tokenizer, "--device", "cpu", "--clip_path", args.clip,
             *(["--taskMaskLM"] if args.mlm else []),
             *([] if args.all_sentences else ["--limit_source", "vqa,visual7w"]), "clipvil_tiny",
             f"vocab_size={len(load_tokenizer(tokenizer))}", f"max_text_len={PAIR_TEXT_LEN if args.pair_steps else 20}"]
    parsed = build_parser("pretrain").parse_intermixed_args(flags)
    task = ClipVilPretrainTask(resolve_config(parsed.overrides, pretrain_values(parsed), "probe", base=["clipvil"]))
    torch.manual_seed(args.seed)
    model = task.build_model()
    if args.init_std:
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(0, args.init_std)
    model.backbone = FrozenGrid(model.backbone)
    return task, model


def pair_task(task, model, train, steps: int, lr: float, rng) -> float:
    """``steps`` of the sentence-pair task; the mean loss of the last 50 steps."""
    by_image = defaultdict(list)
    for index in range(len(train)):
        by_image[train.img_ids[index]].append(index)
    images, losses = list(by_image), []
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    no_image = {"tokens": torch.zeros(BATCH, 0, model.hidden_size), "masks": torch.zeros(BATCH, 0, dtype=torch.long)}
    for _ in range(steps):
        first, second, same = [], [], []
        for _ in range(BATCH):
            image = images[rng.integers(len(images))]
            first.append(train.texts[by_image[image][rng.integers(len(by_image[image]))]])
            other = image if rng.random() < 0.5 else images[rng.integers(len(images))]
            second.append(train.texts[by_image[other][rng.integers(len(by_image[other]))]])
            same.append(int(other == image))
        encoded = task.tokenizer(first, second, padding="max_length", truncation=True, max_length=PAIR_TEXT_LEN,
                                 return_tensors="pt")
        features = model.infer(encoded["input_ids"], encoded["attention_mask"], image_embeds=no_image)
        loss = itm_loss(model.itm_score(features["cls_feats"]), torch.tensor(same)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses[-50:]))


def validation_batches(val, collate) -> list[dict]:
    """The validation set in batches of 64, each example with a fixed draw (seed 1000 + index)."""
    return [collate([val[(i, 1000 + i)] for i in range(s, min(len(val), s + 64))]) for s in range(0, len(val), 64)]


@torch.no_grad()
def evaluate(task, model, batches) -> dict[str, float]:
    """Validation ITM accuracy, with blank images, and [CLS]'s layer-0 attention on the image."""
    model.eval()
    out = {}
    for name, change in (("itm", lambda b: b), ("itm_blank", blank_images)):
        results = [task.compute(model, change(b))["itm"] for b in batches]
        out[name] = round(float(sum(r.correct for r in results) / sum(r.total for r in results)), 3)
    batch = batches[0]
    image = model.embed_image(batch["image"], batch["image_pixel_mask"])
    x = torch.cat([model.text_embeddings(input_ids=batch["text_ids"]), image["tokens"]], 1)
    masks = torch.cat([batch["text_masks"], image["masks"].to(batch["text_masks"].dtype)], 1).bool()
    attention = model.encoder.layer[0].attention.self
    q, k = attention._split(attention.query(x)), attention._split(attention.key(x))
    weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).masked_fill(~masks[:, None, None], -1e9).softmax(-1)
    out["cls_attention_on_image"] = round(weights[:, :, 0, batch["text_ids"].shape[1]:].sum(-1).mean().item(), 3)
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="write_synthetic's folder (holding clipvil/ and tokenizer/)")
    parser.add_argument("--clip", default="", help="CLIP file for the ResNet (empty: a random ResNet)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pair_steps", type=int, default=0)
    parser.add_argument("--mlm", action="store_true")
    parser.add_argument("--all_sentences", action="store_true")
    parser.add_argument("--init_std", type=float, default=0.0, help="re-initialise every Linear/Embedding N(0, std)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task, model = build(args)
    train, collate = task.build_dataset("train"), task.collate_fn("train")
    val_batches = validation_batches(task.build_dataset("val"), collate)
    rng = np.random.default_rng(args.seed)
    if args.pair_steps:
        print("pair task loss", round(pair_task(task, model, train, args.pair_steps, args.lr, rng), 4), flush=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    losses = []
    for step in range(1, args.steps + 1):
        batch = collate([train[(int(i), int(rng.integers(1 << 30)))] for i in rng.choice(len(train), BATCH, False)])
        out = task.compute(model, batch)
        optimizer.zero_grad()
        sum(value.loss for value in out.values()).backward()
        optimizer.step()
        losses.append(out["itm"].loss.item())
        if step % max(1, args.steps // 5) == 0:
            metrics = evaluate(task, model, val_batches)
            print(step, {"itm_train_loss": round(float(np.mean(losses[-20:])), 4), **metrics}, flush=True)


if __name__ == "__main__":
    main()

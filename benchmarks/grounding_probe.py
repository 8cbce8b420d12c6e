"""Why grounding from scratch is fragile: what each pre-training term pulls on, at initialisation.

For one training batch of a tiny pre-training run it reports, per loss term, the gradient norm on
each part of the model (the image-only parameters, the text-only parameters, the shared fusion
blocks and the heads), and the norms of the image and text tokens where they meet.

    python benchmarks/grounding_probe.py --data runs/quickstart/data [with words...]

Words after ``with`` are added to ``task_mlm_itm_mae tiny loss_names.itc=1 itm_patch_drop=False``
(the quickstart's pre-training). Results are in docs/results.md.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from torch import nn

from vlkit.config import resolve_config
from vlkit.tasks import build_task
from vlkit.tasks.arrow_task import term_loss

PARTS = {
    "image": ("transformer.patch_embed", "transformer.cls_token", "transformer.pos_embed", "token_type"),
    "text": ("text_embeddings",),
    "fusion": ("transformer.blocks", "transformer.norm", "pooler"),
}
"""Parameter-name prefixes of each part of the single-stream model (the rest are heads)."""


def part_of(name: str) -> str:
    return next((part for part, prefixes in PARTS.items() if name.startswith(prefixes)), "heads")


def gradient_norms(model: nn.Module, loss: torch.Tensor) -> dict[str, float]:
    """L2 norm of d loss / d parameters, per part."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    squares: dict[str, float] = {}
    for (name, _), grad in zip(named, grads):
        if grad is not None:
            squares[part_of(name)] = squares.get(part_of(name), 0.0) + grad.pow(2).sum().item()
    return {part: value ** 0.5 for part, value in sorted(squares.items())}


def token_norms(model: nn.Module, batch: dict) -> dict[str, float]:
    """Mean L2 norm of a text token and of an image token as they enter the fusion blocks."""
    with torch.no_grad():
        text = model.embed_text(batch["text_ids"])
        image = model.embed_image(batch["image"], mask_image=False)["tokens"]
    real = batch["text_masks"].bool()
    return {"text_token": text[real].norm(dim=-1).mean().item(), "image_token": image.norm(dim=-1).mean().item()}


def probe(words: list[str], seed: int) -> dict[str, Any]:
    cfg = resolve_config(["task_mlm_itm_mae", "tiny", "loss_names.itc=1", "itm_patch_drop=False", f"seed={seed}", *words])
    torch.manual_seed(seed)
    task = build_task(cfg)
    model = task.build_model()
    dataset = task.build_dataset("train")
    batch = task.collate_fn("train")([dataset[(i, seed)] for i in range(cfg.per_gpu_batchsize)])
    out = task.compute(model, batch, training=False)
    weights = {"mae": cfg.mae_weight, "itm_wpa": cfg.wpa_weight}
    report = {term: {"loss": term_loss(value).item(),
                     **gradient_norms(model, weights.get(term, 1.0) * term_loss(value))} for term, value in out.items()}
    return {"terms": report, "tokens": token_norms(model, batch)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a synthetic set (vlkit data synth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("words", nargs="*", help="with words added to the pre-training config")
    args = parser.parse_args()
    info = json.loads(open(f"{args.data}/synth_info.json").read())
    data = [f"data_root={args.data}", f"tokenizer={info['tokenizer']}", f"vocab_size={info['vocab_size']}"]
    words = [w for w in args.words if w != "with"]
    print(json.dumps(probe([*data, *words], args.seed), indent=2))


if __name__ == "__main__":
    main()

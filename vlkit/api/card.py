"""The model card (``README.md``) of a model folder."""
from __future__ import annotations

import json
from typing import Any

from torch import nn

from vlkit.models.checkpoints import LoadReport

FAMILIES = {
    "single_stream": "single-stream fusion (VLC / ViLT)",
    "cross_attention": "cross-attention fusion (ALBEF / GRIT-VLP)",
    "co_attention": "co-attention fusion (METER / ELIP)",
    "clipvil": "CLIP-ViL (CLIP ResNet grid features, LXMERT-style encoder)",
}

HEAD_METHODS = {
    "vqa_classifier": "vqa", "text_decoder": "vqa", "itm_score": "match", "itc_head": "embed_images / embed_texts",
    "rank_output": "retrieve", "mlm_score": "fill_mask", "nlvr2_classifier": "nlvr2", "snli_classifier": "entailment",
}


def task_of(cfg: Any) -> str:
    from vlkit.tasks import task_name

    try:
        return task_name(cfg)
    except ValueError:
        return "none"


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    values = metrics.get("val") or metrics.get("metrics") or {}
    lines = [f"| {name} | {value:.4f} |" for name, value in values.items() if isinstance(value, (int, float))]
    return ["| metric | value |", "|---|---|", *lines] if lines else ["(no metrics.json beside the checkpoint)"]


def model_card(cfg: Any, model: nn.Module, checkpoint: str, sha256: str, metrics: dict[str, Any],
               report: LoadReport, answers: list[str] | None) -> str:
    """Markdown: family, task, source checkpoint and its SHA-256, training data, metrics, how to load."""
    heads = [name for name in HEAD_METHODS if hasattr(model, name)]
    methods = sorted({HEAD_METHODS[name] for name in heads})
    parameters = sum(p.numel() for p in model.parameters())
    lines = [
        f"# vlkit model: {cfg.exp_name}",
        "",
        f"- family: `{cfg.model}`, {FAMILIES.get(cfg.model, cfg.model)}",
        f"- task: `{task_of(cfg)}` (loss_names: {json.dumps({k: v for k, v in cfg.loss_names.items() if v})})",
        f"- size: hidden {cfg.hidden_size}, {cfg.num_layers} layers, {parameters / 1e6:.2f} M parameters, "
        f"images {cfg.image_size} px, texts up to {cfg.max_text_len} tokens",
        f"- source checkpoint: `{checkpoint}` ({report.format} format)",
        f"- source SHA-256: `{sha256}`",
        f"- training data: datasets {list(cfg.datasets)} under `{cfg.data_root or '(not recorded)'}`",
        f"- heads: {', '.join(f'`{h}`' for h in heads) or 'none'}; methods: {', '.join(methods) or 'embeddings only'}",
    ]
    if answers is not None:
        lines.append(f"- answer vocabulary: {len(answers)} answers (`answers.json`)")
    if report.missing:
        lines.append(f"- keys the checkpoint did not fill: {len(report.missing)} (e.g. `{report.missing[0]}`)")
    lines += ["", "## Metrics of the run", "", *_metric_lines(metrics), "", "## Use", "", "```python",
              "import vlkit", "", 'model = vlkit.load("THIS_FOLDER", device="cpu")']
    if "vqa" in methods:
        lines.append('model.vqa(["image.jpg"], ["what colour is the circle?"], top_k=5)')
    if "match" in methods:
        lines.append('model.match(["image.jpg"], ["a red circle on the left"])')
    lines += ["```", "", "or `vlkit predict THIS_FOLDER vqa --image image.jpg --question \"...\"`, "
              "`vlkit demo THIS_FOLDER`.", ""]
    return "\n".join(lines)

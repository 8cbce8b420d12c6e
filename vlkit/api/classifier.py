"""Image classifiers fine-tuned by ``vlkit imagenet`` (``main_finetune.py``) as model folders:
``config.yaml`` (``kind: classifier`` and the run's arguments), ``model.safetensors``,
``classes.json`` (class names, from the training ImageFolder), ``preprocess.json`` and ``README.md``;
loaded as ``ImageClassifier`` with ``classify``."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from safetensors.torch import load_model, save_model
from torchvision.datasets.folder import find_classes

from vlkit.api.folder import CARD_FILE, CONFIG_FILE, PREPROCESS_FILE, WEIGHTS_FILE
from vlkit.api.inputs import as_list, open_image
from vlkit.api.model import MissingHeadError

CLASSES_FILE = "classes.json"
KIND = "classifier"


def is_classifier_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """A ``vlkit imagenet`` checkpoint: the model and the run's arguments as a plain dict."""
    return isinstance(checkpoint.get("args"), Mapping) and isinstance(checkpoint.get("model"), Mapping) \
        and "nb_classes" in checkpoint["args"]


def is_classifier_folder(path: str | os.PathLike) -> bool:
    file = Path(path) / CONFIG_FILE
    return file.is_file() and (yaml.safe_load(file.read_text()) or {}).get("kind") == KIND


def class_names(args: Mapping[str, Any]) -> list[str]:
    """The training ImageFolder's class names (``data_path/train``), else ``class_0`` ..."""
    train = os.path.join(str(args.get("data_path", "")), "train")
    if os.path.isdir(train):
        names = find_classes(train)[0]
        if len(names) == args["nb_classes"]:
            return names
    return [f"class_{i}" for i in range(args["nb_classes"])]


def _classifier(args: Mapping[str, Any]) -> torch.nn.Module:
    from vlkit.imagenet.models import build_classifier

    return build_classifier(argparse.Namespace(**args)).eval()


def export_classifier(checkpoint: Mapping[str, Any], source: str, sha256: str, out: str | os.PathLike) -> Path:
    """Write the classifier folder of a ``vlkit imagenet`` checkpoint."""
    from vlkit.imagenet.data import build_transform

    args = dict(checkpoint["args"])
    model = _classifier(args)
    model.load_state_dict(checkpoint["model"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plain = {key: value for key, value in args.items() if isinstance(value, (str, int, float, bool, list, type(None)))}
    (out / CONFIG_FILE).write_text(yaml.safe_dump({"kind": KIND, "args": plain}, sort_keys=True))
    save_model(model, str(out / WEIGHTS_FILE), metadata={"format": "pt", "family": KIND})
    names = class_names(args)
    (out / CLASSES_FILE).write_text(json.dumps(names, indent=0) + "\n")
    transform = build_transform(False, argparse.Namespace(**args))
    (out / PREPROCESS_FILE).write_text(json.dumps({"transform": repr(transform), "image_size": args["input_size"]},
                                                  indent=2) + "\n")
    stats = checkpoint.get("test_stats") or {}
    (out / CARD_FILE).write_text(
        f"# vlkit model: {args.get('model')} image classifier\n\n- family: ViT classifier (`vlkit imagenet`)\n"
        f"- task: classification over {len(names)} classes (`classes.json`)\n- source checkpoint: `{source}`\n"
        f"- source SHA-256: `{sha256}`\n- training data: `{args.get('data_path')}`\n"
        f"- metrics: {json.dumps({k: v for k, v in stats.items() if isinstance(v, (int, float))})}\n\n"
        "## Use\n\n```python\nimport vlkit\n\nmodel = vlkit.load(\"THIS_FOLDER\")\n"
        "model.classify([\"image.jpg\"], top_k=5)\n```\n")
    return out


class ImageClassifier:
    """A loaded classifier folder: ``classify``; the vision-language methods are not there."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu"):
        from vlkit.imagenet.data import build_transform

        path = Path(path)
        self.args = yaml.safe_load((path / CONFIG_FILE).read_text())["args"]
        self.device = torch.device(device)
        self.model = _classifier(self.args)
        missing, unexpected = load_model(self.model, str(path / WEIGHTS_FILE), strict=False)
        if missing or unexpected:
            raise ValueError(f"{path / WEIGHTS_FILE} does not fit its config.yaml (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}); re-export it")
        self.model.to(self.device)
        self.classes = json.loads((path / CLASSES_FILE).read_text())
        self.transform = build_transform(False, argparse.Namespace(**self.args))

    def classify(self, images: Any, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """The ``top_k`` classes of each image, ``{"label", "index", "score"}`` (softmax), best first."""
        items = as_list(images, "images")
        pixels = torch.stack([item.float() if torch.is_tensor(item) else self.transform(open_image(item, i))
                              for i, item in enumerate(items)]).to(self.device)
        with torch.inference_mode():
            probs = self.model(pixels).float().softmax(dim=-1)
        values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
        return [[{"label": self.classes[i], "index": i, "score": float(v)} for i, v in zip(row_i, row_v)]
                for row_i, row_v in zip(indices.tolist(), values.tolist())]

    def __getattr__(self, name: str) -> Any:
        if name in ("vqa", "match", "embed_images", "embed_texts", "retrieve", "fill_mask", "nlvr2", "entailment"):
            raise MissingHeadError(f"this image classifier has no vision-language heads for {name}(); those are "
                                   "trained with `vlkit run` (e.g. task_mlm_itm_mae, task_finetune_vqa_*)")
        raise AttributeError(name)

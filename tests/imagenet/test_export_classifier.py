"""A ``vlkit imagenet`` checkpoint exported as a classifier folder: ``vlkit.load(...).classify``
gives the fine-tuned model's probabilities with the ImageFolder's class names."""
import argparse
import json

import pytest
import torch
from PIL import Image
from torchvision.datasets.folder import find_classes

import vlkit
from vlkit.api import ImageClassifier, MissingHeadError, export
from vlkit.cli import main
from vlkit.imagenet.data import build_transform
from vlkit.imagenet.models import build_classifier
from vlkit.imagenet.outputs import BEST


def test_classifier_folder_classifies_as_the_trained_model(trained, tree, tmp_path, capsys):
    out, _ = trained
    checkpoint = out / BEST
    folder = export(checkpoint, tmp_path / "classifier")
    model = vlkit.load(folder)
    assert isinstance(model, ImageClassifier)
    names = find_classes(str(tree / "train"))[0]
    assert model.classes == names
    images = sorted((tree / "val").rglob("*.*"))[:4]
    result = model.classify([str(path) for path in images], top_k=3)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    args = argparse.Namespace(**saved["args"])
    reference = build_classifier(args).eval()
    reference.load_state_dict(saved["model"])
    transform = build_transform(False, args)

    with torch.no_grad():
        probs = reference(torch.stack([transform(Image.open(p).convert("RGB")) for p in images])).softmax(-1)
    top = probs.topk(3, dim=1)
    assert [[hit["index"] for hit in row] for row in result] == top.indices.tolist()
    scores = torch.tensor([[hit["score"] for hit in row] for row in result])
    torch.testing.assert_close(scores, top.values, atol=1e-6, rtol=0)
    assert [row[0]["label"] for row in result] == [names[i] for i in top.indices[:, 0].tolist()]
    with pytest.raises(MissingHeadError, match="no vision-language heads for vqa"):
        model.vqa(["x.png"], ["what?"])
    assert main(["predict", str(folder), "--json", "classify", "--image", str(images[0]), "--top-k", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)[0]
    assert [hit["label"] for hit in printed] == [hit["label"] for hit in result[0]]
    assert [hit["score"] for hit in printed] == pytest.approx([hit["score"] for hit in result[0]], abs=1e-6)

"""--grad_checkpointing and --compile on the ImageNet classifier: the same gradients, the
library's own switch for every block, vlkit's wrapper for the first N."""
import copy

import pytest
import torch

from conftest import TINY_MODEL, parse
from vlkit.cli.imagenet import apply_performance_options
from vlkit.imagenet.models import build_classifier


def gradients(model, images, labels):
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("blocks", [-1, 1])
def test_checkpointing_keeps_the_gradients(blocks):
    args = parse([*TINY_MODEL, "--nb_classes", "5", "--drop_path", "0.0", "--compile", "off",
                  "--grad_checkpointing", str(blocks)])
    torch.manual_seed(0)
    model = build_classifier(args)
    checkpointed = copy.deepcopy(model)
    apply_performance_options(checkpointed, args, torch.device("cpu"))
    if blocks == -1:
        assert checkpointed.grad_checkpointing  # timm's own switch
    else:
        assert [getattr(b, "checkpointed", False) for b in checkpointed.blocks] == [True, False]
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    expected, got = gradients(model, images, labels), gradients(checkpointed, images, labels)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert checkpointed.state_dict().keys() == model.state_dict().keys()

"""CLIP weight files in the three layouts read back to the same OpenAI-named state dict."""
import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import nn

from vlkit.models.checkpoints.clip import is_torchscript, read_clip_state_dict, visual_kind, visual_state


def tiny_clip(resnet: bool = False) -> CLIP:
    torch.manual_seed(0)
    layers = (1, 1, 1, 1) if resnet else 1
    vision = CLIPVisionCfg(layers=layers, width=32, patch_size=8, image_size=32, head_width=16)
    text = CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=2, layers=1)
    return CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text)


class ArchiveLike(nn.Module):
    """What OpenAI's archives hold: the model plus integer metadata entries."""

    def __init__(self, clip: CLIP):
        super().__init__()
        self.visual = clip.visual
        self.register_buffer("input_resolution", torch.tensor(32))

    def forward(self, image):
        return self.visual(image)


@pytest.mark.parametrize("resnet", [False, True])
def test_three_layouts_read_back_equal(tmp_path, resnet):
    clip = tiny_clip(resnet).eval()
    expected = {k: v for k, v in clip.state_dict().items() if k.startswith("visual.")}
    torch.save(clip.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in clip.state_dict().items()}, "epoch": 3},
               tmp_path / "open_clip.pt")
    torch.jit.trace(ArchiveLike(clip).eval(), torch.randn(1, 3, 32, 32), check_trace=False).save(str(tmp_path / "archive.pt"))
    assert is_torchscript(str(tmp_path / "archive.pt")) and not is_torchscript(str(tmp_path / "plain.pt"))
    for name in ("plain.pt", "open_clip.pt", "archive.pt"):
        state = read_clip_state_dict(str(tmp_path / name))
        assert "input_resolution" not in state
        assert visual_kind(state) == ("resnet" if resnet else "vit")
        visual = visual_state(state)
        assert set(visual) == {k[len("visual."):] for k in expected}
        for key, value in expected.items():
            torch.testing.assert_close(visual[key[len("visual."):]], value)


def test_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="clip_path='nowhere.pt'.*OpenAI CLIP archive"):
        read_clip_state_dict("nowhere.pt", "clip_path")
    torch.save({"bert.weight": torch.zeros(2)}, tmp_path / "bert.pt")
    with pytest.raises(ValueError, match="no CLIP image tower"):
        read_clip_state_dict(str(tmp_path / "bert.pt"))

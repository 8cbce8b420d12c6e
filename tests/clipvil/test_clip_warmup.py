"""``vlkit.clipvil.contrastive`` (``clip-pretrain``): the CLIP-style warm-up learns on the synthetic
captions, and its file loads through ``--clip_path`` into ``clipvil_tiny``'s ResNet, which then
computes exactly open_clip's image features."""
import math

import pytest
import torch

from vlkit.cli.clipvil import build_parser, clip_pretrain, main, pretrain_values
from vlkit.clipvil.contrastive import ContrastiveConfig, build_clip
from vlkit.config import resolve_config
from vlkit.data.synthetic import write_synthetic
from vlkit.data.tokenizer import load_tokenizer
from vlkit.models.build import build_model


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return write_synthetic(str(tmp_path_factory.mktemp("synthetic")), num_images=80, seed=0, image_size=64)


def warmup_flags(data, output, *extra):
    return ["--data_root", data["clipvil"]["root"], "--tokenizer", data["tokenizer"], "--output", str(output), *extra]


def pretrain_config(data, clip_path):
    """Stage one's config from the benchmark's command line with ``--clip_path``."""
    args = build_parser("pretrain").parse_intermixed_args([
        "--llayers", "2", "--xlayers", "0", "--rlayers", "0", "--visualbert_style", "--input_raw_images", "--use_clip",
        "--clip_model_name", "RN50", "--use_positional_embedding", "--taskMaskLM", "--taskMatched", "--objMaskRate",
        "0.0", "--data_root", data["clipvil"]["root"], "--tokenizer", data["tokenizer"], "--clip_path", str(clip_path),
        "clipvil_tiny", f"vocab_size={data['vocab_size']}"])
    return resolve_config(args.overrides, pretrain_values(args), "pretrain flags", base=["clipvil"])


def test_warmup_learns_and_its_file_gives_clipvil_tiny_open_clips_resnet(data, tmp_path):
    path = tmp_path / "clip.pt"
    result = clip_pretrain(warmup_flags(data, path, "--steps", "40", "--batchSize", "16", "clipvil_tiny"))
    chance = math.log(16)  # the loss of features that ignore their inputs
    assert result["first_loss"] > chance - 0.1 and result["loss_tail"] < chance - 0.3, result

    cfg = pretrain_config(data, path)
    model = build_model(cfg).eval()  # build_clipvil loads clip_path
    report = model.backbone.load_clip(str(path))
    assert report.missing == [] and report.unexpected == []
    assert {k for k in report.ignored if k.startswith("visual.")} == {k for k in report.ignored if "attnpool" in k}

    tokenizer = load_tokenizer(data["tokenizer"])
    clip = build_clip(ContrastiveConfig("", "", ""), len(tokenizer), tokenizer.pad_token_id, tokenizer.sep_token_id)
    clip.load_state_dict(torch.load(path), strict=True)  # OpenAI / open_clip key names
    clip.eval()
    square, canvas = torch.randn(2, 3, 160, 160), torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        assert torch.equal(clip.visual.attnpool(model.backbone(square)), clip.visual(square))
        trunk = clip.visual.layer4(clip.visual.layer3(clip.visual.layer2(clip.visual.layer1(clip.visual.stem(canvas)))))
        assert torch.equal(model.backbone(canvas), trunk)
        assert not torch.equal(build_model(pretrain_config(data, "")).backbone.eval()(canvas), trunk)


def test_warmup_refuses_bad_inputs_with_the_fix(data, tmp_path, capsys):
    with pytest.raises(ValueError, match="batch_size=500 but the training files hold .* lower batch_size"):
        clip_pretrain(warmup_flags(data, tmp_path / "c.pt", "--batchSize", "500", "clipvil_tiny"))
    assert main(["clip-pretrain", "--data_root", str(tmp_path), "--tokenizer", data["tokenizer"], "--output",
                 str(tmp_path / "c.pt")]) == 2
    assert "lxmert/mscoco_train.json: no such file; data_root must be CLIP-ViL's data folder" in capsys.readouterr().err

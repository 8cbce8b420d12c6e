"""Pictures of a loaded model: the alignment map's transport masses, MAE reconstructions that keep
the visible patches, and the retrieval grid (``vlkit viz``)."""
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import vlkit
from tests.api._api_runs import data_words
from vlkit.api import export, pictures
from vlkit.cli import main
from vlkit.config import resolve_config
from vlkit.models.build import build_model


@pytest.fixture(scope="module")
def pretrained(scenes, tmp_path_factory):
    """A tiny VLC pre-training model (MLM, ITM, ITC, MAE heads) as a model folder."""
    torch.manual_seed(0)
    cfg = resolve_config(["task_mlm_itm_mae", "tiny", "loss_names.itc=1", *data_words(scenes)])
    folder = tmp_path_factory.mktemp("pretrained")
    torch.save({"state_dict": build_model(cfg).state_dict(), "vlkit": {},
                "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)}}, folder / "m.ckpt")
    return export(folder / "m.ckpt", folder / "model")


@pytest.fixture
def pictures_dir(tmp_path):
    for colour in ("red", "green", "blue"):
        image = Image.new("RGB", (64, 64), "white")
        image.paste(colour, (10, 10, 40, 40))
        image.save(tmp_path / f"{colour}.png")
    return tmp_path


def test_alignment_map_spreads_each_word_over_the_patches(pretrained, pictures_dir):
    model = vlkit.load(pretrained)
    tokens, maps = pictures.alignment(model, str(pictures_dir / "red.png"), "a red square on the left")
    assert tokens == ["a", "red", "square", "on", "the", "left"]  # no [CLS] / [SEP]
    grid = model.cfg.image_size // model.cfg.patch_size
    assert maps.shape == (6, grid, grid) and (maps >= 0).all()
    assert maps.sum(axis=(1, 2)) == pytest.approx([1 / 6] * 6, abs=1e-5)  # IPOT's exact word marginal
    assert pictures.alignment_png(model, str(pictures_dir / "red.png"), "a red square").startswith(b"\x89PNG")


def test_mae_reconstruction_keeps_the_visible_patches(pretrained, pictures_dir):
    model = vlkit.load(pretrained)
    panels = pictures.mae_reconstruction(model, str(pictures_dir / "green.png"))
    removed = panels["removed"]
    assert removed.mean().item() == pytest.approx(model.cfg.mask_ratio, abs=1 / len(removed))
    patch = model.cfg.patch_size
    grid = model.cfg.image_size // patch
    visible = (1 - removed).reshape(grid, grid).repeat_interleave(patch, 0).repeat_interleave(patch, 1).bool()
    assert torch.equal(panels["prediction"][:, visible], panels["target"][:, visible])
    assert torch.equal(panels["masked"][:, ~visible], torch.zeros_like(panels["masked"][:, ~visible]))
    assert not torch.equal(panels["prediction"][:, ~visible], panels["target"][:, ~visible])
    expected = model.preprocess.images([str(pictures_dir / "green.png")]).pixels[0]
    torch.testing.assert_close(panels["target"], expected)


def test_viz_commands_write_pngs(pretrained, pictures_dir, tmp_path):
    (tmp_path / "queries.txt").write_text("a red square\na blue square\n")
    for words in (["retrieval", "--images", str(pictures_dir), "--texts", str(tmp_path / "queries.txt"), "--k", "2"],
                  ["mae", "--image", str(pictures_dir / "red.png")],
                  ["align", "--image", str(pictures_dir / "red.png"), "--text", "a red square"]):
        out = tmp_path / f"{words[0]}.png"
        assert main(["viz", *words, "--model", str(pretrained), "--out", str(out)]) == 0
        assert out.read_bytes().startswith(b"\x89PNG")


def test_elip_overlay_for_a_pruning_model_and_a_clear_refusal_otherwise(pretrained, scenes, pictures_dir, tmp_path):
    cfg = resolve_config(["task_mlm_itm_mae", "tiny", "elip_tiny", "mae_patch_drop=False", "loss_names.mae=0",
                          *data_words(scenes)])
    torch.save({"state_dict": build_model(cfg).state_dict(), "vlkit": {},
                "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)}}, tmp_path / "elip.ckpt")
    elip = vlkit.load(export(tmp_path / "elip.ckpt", tmp_path / "elip"))
    assert pictures.prunes_tokens(elip)
    assert pictures.elip_png(elip, str(pictures_dir / "red.png"), "a red square").startswith(b"\x89PNG")
    plain = vlkit.load(pretrained)
    with pytest.raises(ValueError, match="prunes no image tokens"):
        pictures.elip_png(plain, str(pictures_dir / "red.png"), "a red square")

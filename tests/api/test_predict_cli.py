"""``vlkit export`` and ``vlkit predict`` on the command line."""
import json

from PIL import Image

import vlkit
from vlkit.cli import main


def test_export_then_predict_prints_what_the_api_returns(vqa_run, tmp_path, capsys):
    assert main(["export", str(vqa_run), "--out", str(tmp_path / "folder")]) == 0
    image = tmp_path / "shape.png"
    Image.new("RGB", (64, 64), "red").save(image)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "folder"), "--json", "vqa", "--image", str(image),
                 "--question", "what colour is it?", "--top-k", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == vlkit.load(tmp_path / "folder").vqa([str(image)], ["what colour is it?"], top_k=3)
    assert main(["predict", str(tmp_path / "folder"), "vqa", "--image", str(image), "--question", "what?"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", "question", "answer", "score"] and len(table) == 6
    assert main(["predict", str(tmp_path / "folder"), "match", "--image", str(image), "--text", "x"]) == 2
    assert "no itm_score head" in capsys.readouterr().err


def test_export_of_a_checkpoint_without_config_asks_for_its_presets(tmp_path, capsys):
    import torch

    torch.save({"state_dict": {"transformer.cls_token": torch.zeros(1, 1, 8)}}, tmp_path / "foreign.ckpt")
    assert main(["export", str(tmp_path / "foreign.ckpt"), "--out", str(tmp_path / "out")]) == 2
    assert "give the presets and key=value words" in capsys.readouterr().err


def test_retrieve_over_a_folder_reuses_its_gallery_file(irtr_run, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for colour in ("red", "green", "blue"):
        Image.new("RGB", (64, 64), colour).save(folder / f"{colour}.png")
    (tmp_path / "texts.txt").write_text("a red square\n\na green circle\n")
    words = ["predict", str(irtr_run), "--json", "retrieve", "--images", str(folder), "--texts",
             str(tmp_path / "texts.txt"), "--k", "2", "--gallery", str(tmp_path / "gallery.safetensors")]
    capsys.readouterr()
    assert main(words) == 0
    first = json.loads(capsys.readouterr().out)
    assert (tmp_path / "gallery.safetensors").is_file() and [len(hits) for hits in first] == [2, 2]
    assert main(words) == 0
    assert json.loads(capsys.readouterr().out) == first

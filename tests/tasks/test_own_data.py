"""Own data without internal helpers (issue 19): ``vlkit data tokenizer``, the tokenizer, vocab_size
and vqav2_label_size following the data root, and a clear error for a preset's missing datasets."""
import json
import shutil
from pathlib import Path

import pytest

from vlkit.cli import main
from vlkit.config import resolve_config
from vlkit.data.arrow import MissingArrowFilesError
from vlkit.data.data_tokenizer import data_texts
from vlkit.data.tokenizer import load_tokenizer
from vlkit.tasks import build_task


@pytest.fixture
def coco_root(synthetic, tmp_path):
    """A data root holding only the synthetic COCO caption tables and VQA tables, no tokenizer."""
    for path in sorted(Path(synthetic["out_dir"]).glob("*.arrow")):
        if path.name.startswith(("coco_caption", "vqav2")):
            shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_data_tokenizer_is_trained_saved_and_then_used_by_default(coco_root, capsys):
    assert main(["data", "tokenizer", str(coco_root), "--vocab-size", "150"]) == 0
    assert "WordPiece tokenizer" in capsys.readouterr().out
    tokenizer = load_tokenizer(str(coco_root / "tokenizer"))
    assert len(tokenizer) <= 150
    text = "a red circle on the left"
    assert tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"]) == ["[CLS]", *text.split(), "[SEP]"]
    cfg = resolve_config(["task_mlm_itm_mae", "tiny", f"data_root={coco_root}", "datasets=[coco]"])
    assert cfg.tokenizer == str(coco_root / "tokenizer") and cfg.vocab_size == len(tokenizer)
    named = resolve_config(["tiny", f"data_root={coco_root}", "tokenizer=elsewhere"])
    assert named.tokenizer == "elsewhere"  # given on the command line: kept


def test_json_annotations_give_their_texts(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps([{"image": "a.jpg", "caption": ["Two dogs", "a dog"]},
                                                     {"question": "what colour?", "answer": ["red"]}]))
    (tmp_path / "answer_list.json").write_text(json.dumps(["red", "blue"]))
    texts, files = data_texts(tmp_path)
    assert sorted(texts) == sorted(["Two dogs", "a dog", "what colour?", "red", "red", "blue"]) and len(files) == 2
    assert "a.jpg" not in texts


def test_a_vocab_size_that_disagrees_with_the_tokenizer_names_both(synthetic):
    words = ["task_mlm_itm_mae", "tiny", f"data_root={synthetic['out_dir']}", f"tokenizer={synthetic['tokenizer']}"]
    assert resolve_config(words).vocab_size == synthetic["vocab_size"]
    task = build_task(resolve_config([*words, f"vocab_size={synthetic['vocab_size'] + 7}"]))
    with pytest.raises(ValueError, match=f"has {synthetic['vocab_size']} tokens but vocab_size="
                                         f"{synthetic['vocab_size'] + 7}; set vocab_size={synthetic['vocab_size']}"):
        task.build_dataset("train")


def test_the_vqa_label_size_follows_the_answers(synthetic):
    words = ["task_finetune_vqa_mae_randaug", "tiny", f"data_root={synthetic['out_dir']}",
             f"tokenizer={synthetic['tokenizer']}"]
    assert resolve_config(words).vqav2_label_size == synthetic["vqav2_label_size"]
    task = build_task(resolve_config([*words, "vqav2_label_size=3129"]))
    with pytest.raises(ValueError, match=f"vqav2_label_size=3129 but the answers .* use {synthetic['vqav2_label_size']} "
                                         f"labels; set vqav2_label_size={synthetic['vqav2_label_size']}"):
        task.answers


def test_a_preset_dataset_missing_from_the_root_names_it_and_what_is_there(coco_root, synthetic):
    shutil.copytree(synthetic["tokenizer"], coco_root / "tokenizer")
    task = build_task(resolve_config(["task_mlm_itm_mae", "tiny", f"data_root={coco_root}"]))
    with pytest.raises(MissingArrowFilesError) as caught:
        task.build_dataset("train")
    message = str(caught.value)
    assert "datasets ['vg', 'sbu', 'gcc']" in message and "datasets=[coco]" in message
    assert str(coco_root / "vg.arrow") in message

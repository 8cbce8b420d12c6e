"""Model folders: export then ``vlkit.load`` reproduces the model exactly, loads without
unpickling, and the task methods agree with the tasks' own evaluation."""
import json
import pickle

import pytest
import torch
from omegaconf import OmegaConf

import vlkit
from vlkit.api import export
from vlkit.api.folder import CONFIG_FILE, PREPROCESS_FILE, WEIGHTS_FILE
from vlkit.cli import main
from vlkit.config import resolve_config
from vlkit.models.build import build_model
from vlkit.tasks import build_task

from tests.api._api_runs import data_words

FAMILIES = {
    "single_stream": ["task_mlm_itm_mae", "tiny", "loss_names.itc=1"],
    "cross_attention": ["albef_pretrain", "tiny", "model=cross_attention", "fusion_layer=1", "max_position_embeddings=0",
                        "image_size=64", "itc_queue_size=16", "datasets=[coco]"],
    "co_attention": ["task_mlm_itm_clip_bert", "meter_tiny", "max_text_len=16"],
    "clipvil": ["clipvil_pretrain", "clipvil_tiny"],
}


def vlkit_checkpoint(model, cfg, path):
    torch.save({"state_dict": model.state_dict(), "vlkit": {},
                "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)}}, path)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_then_load_gives_the_same_outputs(family, scenes, tmp_path):
    torch.manual_seed(0)
    cfg = resolve_config([*FAMILIES[family], *data_words(scenes)])
    model = build_model(cfg).eval()
    vlkit_checkpoint(model, cfg, tmp_path / "model.ckpt")
    folder = export(tmp_path / "model.ckpt", tmp_path / "folder")
    for name in (CONFIG_FILE, WEIGHTS_FILE, PREPROCESS_FILE, "README.md", "tokenizer/tokenizer.json"):
        assert (folder / name).is_file(), name
    loaded = vlkit.load(folder)
    image = torch.rand(2, 3, 64, 64)
    batch = loaded.preprocess.images([image[0], image[1]])
    ids, masks = loaded.preprocess.texts(["a red circle", "two blue squares on the left"])
    whole = {} if family == "clipvil" else {"mask_image": False}  # MAE pre-training drops patches
    with torch.no_grad():
        expected = model.infer(ids, masks, batch.pixels, **whole)
        got = loaded.model.infer(ids, masks, batch.pixels)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0, msg=key)
    for head in ("itm_score", "vqa_classifier"):
        if hasattr(model, head):
            torch.testing.assert_close(getattr(loaded.model, head)(got["cls_feats"]),
                                       getattr(model, head)(expected["cls_feats"]), atol=1e-6, rtol=0)
    assert not hasattr(loaded.model, "momentum_model")
    card = (folder / "README.md").read_text()
    assert family in card and "SHA-256" in card


def test_model_folder_loads_without_unpickling(vqa_run, tmp_path, monkeypatch):
    folder = export(vqa_run, tmp_path / "folder")

    def refuse(*args, **kwargs):
        raise AssertionError("a model folder must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = vlkit.load(folder)
    answers = json.loads((folder / "answers.json").read_text())
    assert model.answers == answers and len(answers) == model.cfg.vqav2_label_size


def test_vqa_answers_equal_the_test_submission(vqa_run, scenes, tmp_path):
    checkpoint = vqa_run / "checkpoints" / "best.ckpt"
    assert main(["run", "with", "task_finetune_vqa_mae_randaug", "tiny", *data_words(scenes), "test_only=True",
                 f"load_path={checkpoint}", f"log_dir={tmp_path}", "progress_bar=False", "export_best=False"]) == 0
    submission = {row["question_id"]: row["answer"]
                  for row in json.loads(next(tmp_path.glob("vqa_submit_*.json")).read_text())}
    model = vlkit.load(vqa_run)
    task = build_task(model.cfg.copy())
    dataset = task.build_dataset("test")
    images, questions, qids = [], [], []
    for index in range(min(len(dataset), 24)):
        sample = dataset[index]
        images.append(sample["image"][0] if isinstance(sample["image"], list) else sample["image"])
        questions.append(sample["text"])
        qids.append(sample["qid"])
    answers = [top[0]["answer"] for top in model.vqa(images, questions, top_k=3)]
    assert answers == [submission[qid] for qid in qids]


def test_retrieve_recall_equals_the_evaluator(irtr_run):
    model = vlkit.load(irtr_run)
    task = build_task(model.cfg.copy())
    expected = task.evaluate(model.model, None, "val")
    loader, texts = task.recall_inputs("val")
    rows, pixels = [], []
    for batch in loader:
        rows += batch["img_index"].tolist()
        pixels += list(batch["image"][0] if isinstance(batch["image"], list) else batch["image"])
    order = sorted(range(len(rows)), key=rows.__getitem__)
    rows, pixels = [rows[i] for i in order], [pixels[i] for i in order]
    dataset = loader.dataset
    captions = [dataset.row_texts(int(row))[int(slot)] for row, slot in zip(dataset.text_rows, dataset.text_slots)]
    image_of_text = [rows.index(int(row)) for row in texts.image_rows]
    text_to_image = model.retrieve(texts=captions, images=pixels, k=10, progress=False)
    image_to_text = model.retrieve(texts=captions, images=pixels, k=10, query="images", progress=False)
    assert {len(hits) for hits in text_to_image} == {model.cfg.k_test}  # only ITC's k_test candidates are ranked
    for k in (1, 5):  # within k_test (the evaluator counts beyond it as the split's tail)
        ir = sum(image_of_text[t] in [hit["index"] for hit in hits[:k]] for t, hits in enumerate(text_to_image))
        tr = sum(any(image_of_text[hit["index"]] == i for hit in hits[:k]) for i, hits in enumerate(image_to_text))
        assert ir / len(captions) == pytest.approx(expected[f"ir_r{k}"], abs=1e-9)
        assert tr / len(pixels) == pytest.approx(expected[f"tr_r{k}"], abs=1e-9)


def test_a_foreign_lightning_checkpoint_exports_with_the_words_that_describe_it(scenes, tmp_path):
    from tests.models._model_foreign import lightning_checkpoint
    from tests.models._model_toys import TINY

    words = [*(f"{key}={value}" for key, value in TINY.items()), "loss_names.mlm=1", "loss_names.itm=1",
             "loss_names.mae=1", f"tokenizer={scenes['tokenizer']}"]
    cfg = resolve_config(words)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    torch.save(lightning_checkpoint(model, cfg), tmp_path / "vlc.ckpt")
    with pytest.raises(ValueError, match="carries no vlkit config: give the presets and key=value words"):
        export(tmp_path / "vlc.ckpt", tmp_path / "refused")
    loaded = vlkit.load(export(tmp_path / "vlc.ckpt", tmp_path / "folder", words))
    ids, masks = loaded.preprocess.texts(["a red circle"])
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.itm_score(model.infer(ids, masks, image, mask_image=False)["cls_feats"])
        got = loaded.model.itm_score(loaded.model.infer(ids, masks, image)["cls_feats"])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert "lightning format" in (tmp_path / "folder" / "README.md").read_text()


def test_a_checkpoint_that_needs_unpickling_is_exported_only_when_trusted(scenes, tmp_path):
    from tests.models._model_foreign import fake_module_class, lightning_checkpoint
    from tests.models._model_toys import TINY

    words = [*(f"{key}={value}" for key, value in TINY.items()), "loss_names.itm=1", f"tokenizer={scenes['tokenizer']}"]
    cfg = resolve_config(words)
    model = build_model(cfg).eval()
    # Lightning's own callback classes are known and load as placeholders; an unknown class is not
    with fake_module_class("some_plugin.hooks", "Payload") as cls:
        torch.save(lightning_checkpoint(model, cfg, callback_type=cls), tmp_path / "pl.ckpt")
        with pytest.raises(ValueError, match="set trust_checkpoint=true"):
            vlkit.load(tmp_path / "pl.ckpt", words=words)
        loaded = vlkit.load(tmp_path / "pl.ckpt", words=words, trust_checkpoint=True)
    assert torch.equal(loaded.model.itm_score.fc.weight, model.itm_score.fc.weight)


def test_a_folder_that_would_not_rebuild_its_model_fails_the_export(vqa_run, scenes, tmp_path):
    from vlkit.api.export import check_rebuilds

    folder = export(vqa_run, tmp_path / "folder")
    wider = build_model(resolve_config(["task_finetune_vqa_mae_randaug", "tiny", "hidden_size=96", *data_words(scenes)]))
    with pytest.raises(ValueError, match=r"would not rebuild this model .*pooler.dense.bias: \(96,\) vs \(64,\)"):
        check_rebuilds(wider, folder)


def test_a_text_tower_whose_shape_the_config_does_not_record_rebuilds_from_the_folder(scenes, tmp_path):
    """METER's pretrained RoBERTa has 514 position rows whatever ``max_text_len``: the folder records
    the tower's own shape, so its random-weight rebuild fits the weights."""
    from transformers import AutoTokenizer

    from vlkit.api.export import check_rebuilds
    from vlkit.api.folder import write_model_folder

    words = [*FAMILIES["co_attention"], *data_words(scenes)]
    torch.manual_seed(0)
    model = build_model(resolve_config([*words, "max_position_embeddings=40"])).eval()  # as a pretrained tower
    cfg = resolve_config(words)  # the run's config: nothing says 40
    assert model.text_transformer.config.max_position_embeddings == 40 != cfg.max_text_len
    folder = write_model_folder(tmp_path / "folder", cfg, model, AutoTokenizer.from_pretrained(cfg.tokenizer), None, "")
    check_rebuilds(model, folder)
    loaded = vlkit.load(folder)
    assert loaded.model.text_transformer.config.max_position_embeddings == 40
    ids, masks = loaded.preprocess.texts(["a red circle"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_text(ids, masks), model.encode_text(ids, masks))


def test_an_answer_decoder_model_ranks_the_answer_list_from_its_folder(scenes, tmp_path):
    """ALBEF/GRIT VQA: ``vqa()`` ranks the folder's answers with the decoder, as the task does."""
    from transformers import AutoTokenizer

    from vlkit.api.folder import write_model_folder
    from vlkit.models.fusion.cross_attention import text_positions
    from vlkit.tasks.vqa_rank import rank_answers, tokenize_answers

    words = [*FAMILIES["cross_attention"], *data_words(scenes), "loss_names={vqa_decoder: 1}", "momentum=0", "itc_queue_size=0",
             "distill_alpha=0", "answer_decoder_layers=1"]
    cfg = resolve_config(words)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    answers = ["red", "blue", "two", "circle", "left", "three squares"]
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer)
    folder = write_model_folder(tmp_path / "folder", cfg, model, tokenizer, answers, "")
    loaded = vlkit.load(folder)
    image = torch.rand(3, 64, 64)
    questions = ["what colour is the circle?", "how many squares are there?"]
    got = loaded.vqa([image, image], questions, top_k=3)
    batch = loaded.preprocess.images([image, image])
    ids, masks = loaded.preprocess.texts(questions)
    with torch.no_grad():
        features = model.infer(ids, masks, batch.pixels)
        ranked, scores = rank_answers(model.text_decoder, features["text_feats"], features["text_masks"],
                                      tokenize_answers(tokenizer, answers, text_positions(cfg)), len(answers))
    assert [[a["answer"] for a in row] for row in got] == [[answers[i] for i in row[:3]] for row in ranked.tolist()]
    assert [row[0]["score"] for row in got] == pytest.approx(scores[:, 0].tolist(), abs=1e-5)

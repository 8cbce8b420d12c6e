"""Task-level behaviour that needs no training: task selection, dev-based checkpoint selection,
the retrieval rank head's initialisation, VQA metrics and the submission file."""
import json

import pytest
import torch
from torch import nn

from vlkit.config import resolve_config
from vlkit.eval.submission import checkpoint_stem, write_vqa_submission
from vlkit.eval.vqa_score import vqa_accuracy
from vlkit.models.build import build_model
from vlkit.tasks import build_task, task_name
from vlkit.tasks.classification import Nlvr2Task

TINY_WORDS = ["tiny", "progress_bar=False"]


@pytest.mark.parametrize("preset, task", [
    ("task_finetune_vqa_mae_randaug", "vqa"), ("task_finetune_nlvr2_mae_randaug", "nlvr2"),
    ("task_finetune_irtr_coco_mae_randaug", "irtr"), ("task_finetune_irtr_f30k_mae_randaug", "irtr"),
    ("task_finetune_snli_mae_randaug", "snli"), ("vilt.task_finetune_snli_randaug", "snli"),
    ("vilt.task_finetune_vqa_randaug", "vqa"), ("task_mlm_itm_mae", "pretrain"),
])
def test_presets_pick_their_task(preset, task):
    assert task_name(resolve_config([preset])) == task


class _ConstantPairModel(nn.Module):
    """Predicts class 1 for every NLVR2 pair."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def infer(self, text_ids, text_masks, image, image_token_type_idx=1):
        return {"cls_feats": torch.zeros(len(text_ids), 2)}

    def nlvr2_classifier(self, features):
        return torch.tensor([[0.0, 1.0]]).repeat(len(features), 1)


def _nlvr2_batch(answers, tables):
    size = len(answers)
    return {"text_ids": torch.zeros(size, 4, dtype=torch.long), "text_masks": torch.ones(size, 4, dtype=torch.long),
            "image_0": torch.zeros(size, 3, 8, 8), "image_1": torch.zeros(size, 3, 8, 8),
            "answers": torch.tensor(answers), "table_name": tables}


def test_nlvr2_reports_dev_and_test_and_selects_on_dev(data_words):
    task = Nlvr2Task(resolve_config(["task_finetune_nlvr2_mae_randaug", *TINY_WORDS, *data_words]))
    loader = [
        _nlvr2_batch([1, 0, 1], ["nlvr2_dev", "nlvr2_dev", "nlvr2_test1"]),
        _nlvr2_batch([0, 0, 1, 1], ["nlvr2_dev", "nlvr2_test1", "nlvr2_test1", "nlvr2_test1"]),
    ]
    metrics = task.evaluate(_ConstantPairModel(), loader)
    assert metrics["dev_accuracy"] == pytest.approx(1 / 3)  # dev answers 1, 0, 0
    assert metrics["test_accuracy"] == pytest.approx(3 / 4)  # test answers 1, 0, 1, 1
    assert metrics["accuracy"] == pytest.approx(4 / 7)
    assert metrics["dev_chance"] == pytest.approx(2 / 3) and metrics["test_chance"] == pytest.approx(3 / 4)
    assert metrics["the_metric"] == metrics["dev_accuracy"]


def _save_model(model, path, cfg):
    torch.save({"state_dict": model.state_dict()}, path)


def test_retrieval_rank_head_starts_from_the_loaded_itm_row_unless_the_checkpoint_has_one(tmp_path, data_words):
    pretrain_cfg = resolve_config(["task_mlm_itm_mae", *TINY_WORDS, *data_words])
    pretrained = build_model(pretrain_cfg)
    with torch.no_grad():
        pretrained.itm_score.fc.weight.normal_()
    _save_model(pretrained, tmp_path / "pretrain.ckpt", pretrain_cfg)

    words = ["task_finetune_irtr_f30k_mae_randaug", *TINY_WORDS, *data_words]
    finetune = build_task(resolve_config([*words, f"load_path={tmp_path / 'pretrain.ckpt'}"])).build_model()
    assert torch.equal(finetune.rank_output.weight[0], pretrained.itm_score.fc.weight[1])
    assert torch.equal(finetune.rank_output.bias, pretrained.itm_score.fc.bias[1:2])
    assert not finetune.itm_score.fc.weight.requires_grad

    with torch.no_grad():
        finetune.rank_output.weight.fill_(0.5)
    _save_model(finetune, tmp_path / "irtr.ckpt", pretrain_cfg)
    reloaded = build_task(resolve_config([*words, f"load_path={tmp_path / 'irtr.ckpt'}", "test_only=True"])).build_model()
    assert torch.all(reloaded.rank_output.weight == 0.5)


def test_submission_holds_every_question_once_in_order(tmp_path):
    path = tmp_path / "result" / "vqa_submit_x.json"
    counts = write_vqa_submission({3: "yes", 1: "2", 9: "red"}, [1, 3, 5, 9], str(path), fallback_answer="no")
    entries = json.loads(path.read_text())
    assert entries == [{"question_id": 1, "answer": "2"}, {"question_id": 3, "answer": "yes"},
                       {"question_id": 5, "answer": "no"}, {"question_id": 9, "answer": "red"}]
    assert counts == {"questions": 4, "unanswered": 1}
    with pytest.raises(ValueError, match="repeats question ids"):
        write_vqa_submission({}, [1, 1], str(path), "no")
    assert checkpoint_stem("/a/b/vlc_vqa.ckpt") == "vlc_vqa" and checkpoint_stem("") == "untrained"


def test_vqa_validation_reports_the_official_accuracy_of_the_predicted_strings(synthetic, data_words):
    cfg = resolve_config(["task_finetune_vqa_mae_randaug", *TINY_WORDS, *data_words,
                          f"vqav2_label_size={synthetic['vqav2_label_size']}"])
    task = build_task(cfg)
    annotations = json.loads(open(f"{synthetic['out_dir']}/v2_mscoco_val2014_annotations.json").read())
    human = {a["question_id"]: [x["answer"] for x in a["answers"]] for a in annotations["annotations"]}
    dataset = task.build_dataset("val")
    batch = task.collate_fn("val")([dataset[i] for i in range(6)])

    class FixedAnswer(nn.Module):  # always answers label 2
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1))

        def infer(self, text_ids, text_masks, image):
            return {"cls_feats": torch.zeros(len(text_ids), 1)}

        def vqa_classifier(self, features):
            logits = torch.zeros(len(features), cfg.vqav2_label_size)
            logits[:, 2] = 1.0
            return logits

    metrics = task.evaluate(FixedAnswer(), [batch])
    answer = task.answers[2]
    expected = [vqa_accuracy(answer, human[qid]) for qid in batch["qid"].tolist()]
    assert metrics["official_questions"] == 6
    assert metrics["vqa_accuracy"] == pytest.approx(sum(expected) / 6)
    soft = [dict(zip(labels, scores)).get(2, 0.0) for labels, scores in zip(batch["vqa_labels"], batch["vqa_scores"])]
    assert metrics["score"] == pytest.approx(sum(soft) / 6)

"""The pre-training task: loss combination, configuration errors and evaluation."""
import pytest
import torch
from torch.utils.data import DataLoader

from vlkit.config import resolve_config
from vlkit.tasks import build_task, task_name
from vlkit.tasks.pretrain import PretrainTask
from vlkit.utils.seeding import seeded


def make_task(data_words, *words):
    cfg = resolve_config(["task_mlm_itm_mae", "tiny", *data_words, "drop_rate=0.0", *words])
    return PretrainTask(cfg)


def first_batch(task, split="train", size=8):
    dataset = task.build_dataset(split)
    loader = DataLoader(dataset, batch_size=size, collate_fn=task.collate_fn(split))
    return next(iter(loader))


def test_total_loss_is_vlcs_sum_of_the_terms(data_words):
    task = make_task(data_words, "mae_weight=2.0", "wpa_weight=0.5")
    model = task.build_model()
    batch = first_batch(task)
    with seeded(3):
        logged = task.training_step(model, batch)
    expected = (logged["mlm_loss"] + 2.0 * logged["mae_loss"] + logged["itm_loss"]
                + 0.5 * logged["itm_wpa_loss"])
    torch.testing.assert_close(logged["loss"].detach(), expected)
    assert set(logged) == {"loss", "mlm_loss", "mlm_accuracy", "mae_loss", "itm_loss",
                           "itm_accuracy", "itm_wpa_loss"}
    assert 0 <= logged["mlm_accuracy"] <= 1 and 0 <= logged["itm_accuracy"] <= 1


def test_only_the_terms_switched_on_run(data_words):
    task = make_task(data_words, "loss_names.mae=0", "loss_names.itm=0", "use_mae=False")
    model = task.build_model()
    logged = task.training_step(model, first_batch(task))
    assert set(logged) == {"loss", "mlm_loss", "mlm_accuracy"}
    torch.testing.assert_close(logged["loss"].detach(), logged["mlm_loss"])


@pytest.mark.parametrize("words, message", [
    (["use_mae=False"], "use_mae=True"),
    (["draw_false_image=0"], "draw_false_image=1"),
    (["mae_patch_drop=False"], "mae_patch_drop=True"),
    (["loss_names.mpp=1"], "mpp"),
    (["loss_names.mlm=0", "loss_names.itm=0", "loss_names.mae=0", "loss_names.irtr=0.5"], "mlm"),
])
def test_inconsistent_configs_fail_with_the_fix(data_words, words, message):
    with pytest.raises(ValueError, match=message):
        make_task(data_words, *words)


def test_vocab_smaller_than_the_tokenizer_is_an_error(data_words, synthetic):
    task = make_task(data_words, "vocab_size=20")
    with pytest.raises(ValueError, match=f"set vocab_size={synthetic['vocab_size']}"):
        task.build_dataset("train")


def test_task_is_chosen_from_loss_names(data_words):
    assert task_name(resolve_config(["task_mlm_itm_mae"])) == "pretrain"
    assert task_name(resolve_config(["task_finetune_vqa_mae_randaug"])) == "vqa"
    assert isinstance(build_task(resolve_config(["task_mlm_itm_mae", "tiny", *data_words])), PretrainTask)


def test_evaluation_is_exact_repeatable_and_leaves_the_rng_alone(data_words):
    task = make_task(data_words, "datasets=[coco]")
    model = task.build_model().eval()
    dataset = task.build_dataset("val")
    loader = DataLoader(dataset, batch_size=16, collate_fn=task.collate_fn("val"))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with torch.no_grad():
        first = task.evaluate(model, loader)
        second = task.evaluate(model, loader)
    assert torch.equal(torch.get_rng_state(), before)
    assert first == second
    assert first["the_metric"] == pytest.approx(first["mlm_accuracy"] + first["itm_accuracy"])
    # ITM labels: floor(B/2) positives per batch, so chance is the majority share over the split.
    batches = [len(dataset) // 16 * [16], [len(dataset) % 16]]
    sizes = [size for group in batches for size in group if size]
    positives = sum(size // 2 for size in sizes) / sum(sizes)
    assert first["itm_chance"] == pytest.approx(max(positives, 1 - positives))
    assert 0 < first["mlm_chance"] < 1

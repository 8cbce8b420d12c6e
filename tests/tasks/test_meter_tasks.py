"""Each METER task, configured by the seed's command line (ELIP's README) with only the paths and
the sizes changed, trains on the synthetic data: its loss falls over a few optimizer steps on a
fixed batch (the same model, task, collator and optimizer groups the trainer uses). One seed
command also runs end to end and its checkpoint comes back through ``test_only``."""
import pytest
import torch

from tests.models._meter_toys import roberta_tokenizer, wordpiece_words
from vlkit.cli import main
from vlkit.config import resolve_config
from vlkit.engine.optim import build_optimizer
from vlkit.tasks import build_task

SEED = "data_root={data} num_gpus=1 num_nodes=1"
SEED_COMMANDS = {
    "pretrain": "task_mlm_itm_clip_bert per_gpu_batchsize=32 clip16 text_roberta image_size=288",
    "vqa": "task_finetune_vqa_clip_bert per_gpu_batchsize=32 clip16 text_roberta image_size=576 clip_randaug",
    "irtr": "task_finetune_irtr_f30k_clip_bert get_recall_metric=False per_gpu_batchsize=32 clip16 "
            "text_roberta image_size=384 clip_randaug",
    "nlvr2": "task_finetune_nlvr2_clip_bert per_gpu_batchsize=32 clip16 text_roberta image_size=288 clip_randaug",
    "snli": "task_finetune_snli_clip_bert per_gpu_batchsize=8 clip16 text_roberta image_size=384 clip_randaug",
}
# METER's own 5x on heads and co-attention (meter_tiny turns it off so that a random model grounds
# over hundreds of steps; these 8-step single-batch fits were sized with it)
TINY = ["meter_tiny", "image_size=32", "max_text_len=16", "drop_rate=0.0", "progress_bar=False", "learning_rate=5e-4",
        "lr_mult_head=5", "lr_mult_cross_modal=5"]
STEPS, BATCH = 8, 4


@pytest.fixture(scope="module")
def roberta_dir(synthetic, tmp_path_factory) -> str:
    """A RoBERTa BPE tokenizer of the synthetic set's words (the text tower is then a RoBERTa)."""
    return roberta_tokenizer(wordpiece_words(synthetic["tokenizer"]), str(tmp_path_factory.mktemp("roberta")))


def seed_words(task: str, synthetic: dict, tokenizer: str, vocab_size: int) -> list[str]:
    return [*SEED.format(data=synthetic["out_dir"]).split(), *SEED_COMMANDS[task].split(), *TINY,
            f"tokenizer={tokenizer}", f"vocab_size={vocab_size}", f"vqav2_label_size={synthetic['vqav2_label_size']}"]


# the second pretrain case composes ITC and GRIT's in-batch hard negatives with meter_tiny's ELIP
# stages: the image is embedded once, pruned against its paired caption
@pytest.mark.parametrize("task_name, roberta, extra", [
    ("pretrain", True, []), ("pretrain", True, ["loss_names.itc=1", "itm_negatives=hardest", "learning_rate=1e-3"]), ("vqa", True, []), ("irtr", False, ["draw_false_text=3"]),
    ("nlvr2", False, []), ("snli", True, []),
])
def test_meter_task_loss_falls_on_the_synthetic_data(task_name, roberta, extra, synthetic, roberta_dir):
    tokenizer, vocab = (roberta_dir, 400) if roberta else (synthetic["tokenizer"], synthetic["vocab_size"])
    cfg = resolve_config([*seed_words(task_name, synthetic, tokenizer, vocab), *extra])
    assert cfg.model == "co_attention" and cfg.vit == "ViT-B/16"
    torch.manual_seed(0)
    task = build_task(cfg)
    assert task.name == task_name
    model = task.build_model().train()
    assert type(model.text_transformer).__name__ == ("RobertaModel" if roberta else "BertModel")
    dataset = task.build_dataset("train")
    batch = task.collate_fn("train")([dataset[i] for i in range(BATCH)])
    optimizer = build_optimizer(model, cfg)
    losses = []
    for _ in range(STEPS):
        loss = task.training_step(model, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_seed_pretraining_run_fills_the_fine_tuning_model(synthetic, roberta_dir, tmp_path):
    words = seed_words("pretrain", synthetic, roberta_dir, 400)
    run = ["max_steps=1", "val_check_interval=1", "batch_size=32", "per_gpu_batchsize=32", "datasets=[f30k]",
           f"log_dir={tmp_path}", "run_name=pretrain"]
    assert main(["run", "with", *words, *run]) == 0
    checkpoint = tmp_path / "pretrain" / "version_0" / "checkpoints" / "last.ckpt"
    trained = torch.load(checkpoint, weights_only=True)["state_dict"]
    snli = resolve_config([*seed_words("snli", synthetic, roberta_dir, 400), f"load_path={checkpoint}"])
    model = build_task(snli).build_model()
    state = model.state_dict()
    for key in ("vit_model.positional_embedding", "vit_model.transformer.resblocks.0.attn.in_proj_weight",
                "text_transformer.embeddings.word_embeddings.weight", "cross_modal_image_layers.1.output.dense.weight",
                "cross_modal_text_pooler.dense.weight", "token_type_embeddings.weight"):
        torch.testing.assert_close(state[key], trained[key], msg=key)
    assert not hasattr(model, "itm_score") and "snli_classifier.0.weight" not in trained

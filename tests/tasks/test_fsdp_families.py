"""``strategy=fsdp`` trains every family exactly as ``strategy=ddp``: two gloo processes, three
optimizer steps each, one torchrun launch for all eight runs (tiny models, no dropout). The
single-stream fsdp run then validates, writes sharded checkpoints and ends with ``export_best``,
which consolidates them into the run's model folder."""
import json
import os
from pathlib import Path

import pytest
import torch

import vlkit
from tests.tasks._runs import train_losses
from vlkit.api.export import build_loaded_model, resolve_source
from vlkit.engine.dcp_checkpoint import consolidate, is_sharded_checkpoint
from vlkit.engine.logging import read_metrics
from vlkit.utils.distributed import launch_local

REPO = Path(__file__).resolve().parents[2]
ENGINE_TESTS = REPO / "tests" / "engine"
COMMON = ["drop_rate=0.0", "per_gpu_batchsize=4", "batch_size=8", "fast_dev_run=3", "log_every_n_steps=1",
          "progress_bar=False", "learning_rate=1e-3", "warmup_steps=0", "device=cpu", "precision=32",
          "num_workers=0"]


def family_words(synthetic) -> dict[str, list[str]]:
    data = [f"data_root={synthetic['out_dir']}", f"tokenizer={synthetic['tokenizer']}",
            f"vocab_size={synthetic['vocab_size']}"]
    return {
        "single_stream": ["task_mlm_itm_mae", "tiny", *data, "datasets=[coco]"],
        "co_attention": ["task_mlm_itm_clip_bert", "meter_tiny", *data, "max_text_len=16",
                         "datasets=[coco]"],
        "cross_attention": ["albef_pretrain", "tiny", *data, "model=cross_attention", "fusion_layer=1",
                            "max_position_embeddings=0", "itc_queue_size=16", "datasets=[coco]"],
        "clipvil": ["clipvil_pretrain", "clipvil_tiny", f"data_root={synthetic['clipvil']['root']}",
                    f"tokenizer={synthetic['tokenizer']}", f"vocab_size={synthetic['vocab_size']}",
                    "train_file=[lxmert/mscoco_nominival.json]", "val_file=[lxmert/mscoco_minival.json]",
                    "visual_optimizer=sgd", "aspect_ratio_group_factor=-1"],
    }


def test_fsdp_gives_the_ddp_losses_for_every_family(synthetic, tmp_path, monkeypatch):
    runs = []
    # single_stream under fsdp: the same 3 steps as fast_dev_run=3, then validation, checkpoints, export_best
    exported = [*(word if word != "fast_dev_run=3" else "max_steps=3" for word in COMMON), "export_best=True"]
    for family, words in family_words(synthetic).items():
        for strategy in ("ddp", "fsdp"):
            common = exported if (family, strategy) == ("single_stream", "fsdp") else COMMON
            runs.append({"words": [*words, *common, f"strategy={strategy}", f"log_dir={tmp_path}",
                                   f"run_name={family}_{strategy}"]})
    # FSDP composed with activation checkpointing and compiled blocks (graph capture through aot_eager)
    runs.append({"words": [*family_words(synthetic)["single_stream"], *COMMON, "strategy=fsdp", "compile=True",
                           "compile_backend=aot_eager", "grad_checkpointing=True", f"log_dir={tmp_path}",
                           "run_name=single_stream_fsdp_compiled"]})
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(ENGINE_TESTS)]))
    assert launch_local(2, [str(ENGINE_TESTS / "runs_worker.py"), str(tmp_path / "runs.json")]) == 0
    for family in family_words(synthetic):
        ddp, fsdp = (train_losses(tmp_path / f"{family}_{s}" / "version_0") for s in ("ddp", "fsdp"))
        assert sorted(ddp) == [1, 2, 3], family
        assert fsdp == pytest.approx(ddp, rel=1e-5, abs=1e-6), family
        assert len(set(ddp.values())) > 1, family  # the weights moved between steps
        records = {s: read_metrics(tmp_path / f"{family}_{s}" / "version_0" / "metrics.jsonl") for s in ("ddp", "fsdp")}
        setup = records["fsdp"][0]
        assert (setup["strategy"], setup["world_size"]) == ("fsdp", 2)
        norms = {s: [r["train/grad_norm"] for r in records[s] if r["event"] == "train"] for s in records}
        assert norms["fsdp"] == pytest.approx(norms["ddp"], rel=1e-4), family
        assert all(n > 0 for n in norms["ddp"])
    compiled = train_losses(tmp_path / "single_stream_fsdp_compiled" / "version_0")
    assert compiled == pytest.approx(train_losses(tmp_path / "single_stream_ddp" / "version_0"), rel=1e-5, abs=1e-6)
    _assert_exported_like_the_consolidated_checkpoint(tmp_path / "single_stream_fsdp" / "version_0", tmp_path)


def _assert_exported_like_the_consolidated_checkpoint(run, tmp_path):
    best = run / "checkpoints" / "best"
    assert is_sharded_checkpoint(best) and not list((run / "checkpoints").glob("*.ckpt"))
    loaded = vlkit.load(run / "model")
    assert f"`{best}`" in (run / "model" / "README.md").read_text()
    source, checkpoint, path, _ = resolve_source(consolidate(best, tmp_path / "best.ckpt"))
    model, report = build_loaded_model(source.cfg, checkpoint, path)
    assert not report.missing
    torch.manual_seed(0)
    batch = loaded.preprocess.images([torch.rand(3, 64, 64), torch.rand(3, 64, 64)])
    ids, masks = loaded.preprocess.texts(["a red circle", "two blue squares on the left"])
    with torch.no_grad():
        expected = model.infer(ids, masks, batch.pixels, mask_image=False)
        got = loaded.model.infer(ids, masks, batch.pixels)
    for key in ("text_feats", "image_feats", "cls_feats"):
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0, msg=key)

"""Schema defaults, named configs, and the ``with`` command line."""
import pytest

from vlkit.cli import main
from vlkit.config import ConfigError, defaults, resolve_config
from vlkit.config.named_configs import UnknownPresetError, all_presets, plain_names

# Fact sheet §1.2: every key of VLC's default config with its default.
VLC_DEFAULTS = {
    "exp_name": "vlc", "seed": 0, "datasets": ["coco", "vg", "sbu", "gcc"], "batch_size": 4096,
    "train_transform_keys": ["mae"], "val_transform_keys": ["mae"], "image_size": 384,
    "max_image_len": -1, "draw_false_image": 1, "image_only": False, "vqav2_label_size": 3129,
    "max_text_len": 40, "tokenizer": "bert-base-uncased", "vocab_size": 30522,
    "whole_word_masking": False, "mlm_prob": 0.15, "draw_false_text": 0,
    "vit": "mae_vit_base_patch16", "hidden_size": 768, "num_heads": 12, "num_layers": 12,
    "mlp_ratio": 4, "drop_rate": 0.1, "optim_type": "adamw", "learning_rate": 1e-4,
    "weight_decay": 0.01, "decay_power": 1, "max_epoch": 100, "max_steps": 25000,
    "warmup_steps": 2500, "end_lr": 0, "lr_mult": 1, "get_recall_metric": False,
    "resume_from": None, "fast_dev_run": False, "val_check_interval": 1.0, "test_only": False,
    "pretrain_path": "", "mask_ratio": 0.75, "use_mae": False, "mae_weight": 1.0, "data_root": "",
    "log_dir": "result", "per_gpu_batchsize": 0, "num_gpus": 1, "num_nodes": 1, "load_path": "",
    "num_workers": 1, "precision": 16, "is_pretrain": True, "patch_size": 16,
}
VLC_NAMES = [
    "task_mlm_itm_mae", "task_finetune_nlvr2_mae_randaug", "task_finetune_vqa_mae_randaug",
    "task_finetune_irtr_coco_mae_randaug", "task_finetune_irtr_f30k_mae_randaug",
    "step25k", "step50k", "step100k", "step200k",
]
VILT_NAMES = [
    "env_dandelin", "task_mlm_itm", "task_mlm_itm_randaug", "task_mlm_itm_mpp",
    "task_finetune_nlvr2", "task_finetune_nlvr2_randaug", "task_finetune_vqa",
    "task_finetune_vqa_randaug", "task_finetune_irtr_coco", "task_finetune_irtr_coco_randaug",
    "task_finetune_irtr_f30k", "task_finetune_irtr_f30k_randaug", "step25k", "step50k",
    "step100k", "step200k", "vit32_base",
]


def test_schema_holds_every_reference_key_with_its_default():
    config = defaults()
    assert {key: config[key] for key in VLC_DEFAULTS} == VLC_DEFAULTS
    assert config["loss_names"] == {
        "itm": 1, "mlm": 1, "mpp": 0, "vqa": 0, "nlvr2": 0, "irtr": 0, "mae": 0, "itc": 0, "snli": 0,
        "nlvr_ta": 0, "vqa_decoder": 0,
    }


def test_every_vlc_and_vilt_named_config_exists():
    qualified = set(all_presets())
    assert {f"vlc.{name}" for name in VLC_NAMES} <= qualified
    assert {f"vilt.{name}" for name in VILT_NAMES} <= qualified
    assert "tiny" in plain_names()


def test_vlc_pretraining_preset_values():
    cfg = resolve_config(["with", "task_mlm_itm_mae"])
    assert (cfg.exp_name, cfg.image_size, cfg.batch_size, cfg.max_epoch) == ("mlm_itm_mae", 224, 4096, 10)
    assert (cfg.mask_ratio, cfg.use_mae, cfg.mae_weight, cfg.max_image_len) == (0.6, True, 1.0, 200)
    assert dict(cfg.loss_names) == {**{k: 0.0 for k in cfg.loss_names}, "itm": 1.0, "mlm": 1.0, "mae": 1.0}
    assert cfg.max_steps == 25000  # the preset leaves the default in place


def test_vlc_finetune_presets_values():
    vqa = resolve_config(["task_finetune_vqa_mae_randaug"])
    assert (vqa.batch_size, vqa.max_steps, vqa.warmup_steps, vqa.val_check_interval) == (256, None, 0.1, 0.1)
    assert (vqa.lr_mult, vqa.is_pretrain, vqa.draw_false_image) == (10, False, 0)
    assert list(vqa.train_transform_keys) == ["mae_randaug"] and list(vqa.val_transform_keys) == ["mae_test"]
    coco = resolve_config(["task_finetune_irtr_coco_mae_randaug"])
    f30k = resolve_config(["task_finetune_irtr_f30k_mae_randaug"])
    assert (coco.get_recall_metric, f30k.get_recall_metric) == (False, True)
    assert (coco.max_epoch, f30k.max_epoch, coco.draw_false_text) == (20, 10, 15)
    assert (coco.loss_names.itm, coco.loss_names.irtr) == (0.5, 1.0)


def test_step200k_follows_the_system_of_the_command_line():
    assert resolve_config(["task_mlm_itm_mae", "step200k"]).max_epoch == 100
    vilt = resolve_config(["task_mlm_itm", "whole_word_masking=True", "step200k"])
    assert (vilt.max_epoch, vilt.max_steps, vilt.whole_word_masking) == (200, 200000, True)
    assert resolve_config(["vilt.step200k"]).max_epoch == 200
    assert resolve_config(["step200k"]).max_epoch == 100


def test_vilt_presets_start_from_vilts_defaults():
    cfg = resolve_config(["task_finetune_vqa_randaug"])
    assert (cfg.vit, cfg.patch_size, cfg.exp_name, cfg.num_workers) == (
        "vit_base_patch32_384", 32, "finetune_vqa_randaug", 8
    )
    assert list(cfg.train_transform_keys) == ["pixelbert_randaug"]
    assert list(cfg.val_transform_keys) == ["pixelbert"]
    assert cfg.mae_patch_drop is False


def test_presets_apply_left_to_right_and_overrides_win():
    cfg = resolve_config(["image_size=384", "task_mlm_itm_mae", "step50k", "step25k"])
    assert (cfg.image_size, cfg.max_steps) == (384, 25000)
    tiny_last = resolve_config(["task_finetune_vqa_mae_randaug", "tiny"])
    assert (tiny_last.hidden_size, tiny_last.num_layers, tiny_last.image_size) == (64, 2, 64)
    assert (tiny_last.batch_size, tiny_last.is_pretrain, tiny_last.lr_mult) == (32, False, 10)


def test_values_are_parsed_and_type_checked():
    cfg = resolve_config([
        "learning_rate=5e-4", "datasets=[coco, f30k]", "max_steps=None", "warmup_steps=0.1",
        "precision=bf16", "loss_names.mae=1", "run_name=123", "num_gpus=[0,1]",
    ])
    assert cfg.learning_rate == 5e-4 and list(cfg.datasets) == ["coco", "f30k"]
    assert cfg.max_steps is None and cfg.warmup_steps == 0.1 and cfg.precision == "bf16"
    assert cfg.loss_names.mae == 1.0 and cfg.run_name == "123" and list(cfg.num_gpus) == [0, 1]
    assert resolve_config(["mae_weight=2"]).mae_weight == 2.0  # int accepted for a float key
    with pytest.raises(ConfigError, match=r"max_steps=1.5 \(float\) must be int or None"):
        resolve_config(["max_steps=1.5"])
    with pytest.raises(ConfigError, match="whole_word_masking='maybe'"):
        resolve_config(["whole_word_masking=maybe"])


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ConfigError, match="unknown config key 'learnig_rate'; did you mean 'learning_rate'"):
        resolve_config(["task_mlm_itm_mae", "learnig_rate=1e-4"])
    with pytest.raises(ConfigError, match="unknown task 'mllm'.*did you mean 'mlm'"):
        resolve_config(["loss_names.mllm=1"])
    with pytest.raises(ConfigError, match="unknown entry 'keep' in img_prune; did you mean 'keep_ratio'"):
        resolve_config(["img_prune.keep=[0.5]"])
    with pytest.raises(ConfigError, match="unknown entry 'begin' in img_prune"):
        resolve_config(["img_prune={begin: [1]}"])


def test_mapping_entries_set_one_at_a_time():
    cfg = resolve_config(["img_prune={begin_layer: [2], keep_ratio: [0.5]}", "img_prune.keep_ratio=[0.7]"])
    assert dict(cfg.img_prune) == {"begin_layer": [2], "keep_ratio": [0.7]}
    with pytest.raises(ConfigError, match=r"img_prune.keep_ratio=0.7 \(float\) must be list"):
        resolve_config(["img_prune.keep_ratio=0.7"])


def test_unknown_preset_names_the_closest_valid_one():
    with pytest.raises(UnknownPresetError, match="'task_mlm_itm_mea'; did you mean 'task_mlm_itm_mae'"):
        resolve_config(["task_mlm_itm_mea"])


def test_cli_fails_before_running_anything(tmp_path, capsys):
    code = main(["run", "with", "task_mlm_itm_mae", f"log_dir={tmp_path}", "per_gpu_batchsiz=4"])
    assert code == 2
    assert "did you mean 'per_gpu_batchsize'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_lists_and_shows_presets(capsys):
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert all(f"vlc.{name}" in listing for name in VLC_NAMES)
    assert main(["presets", "step50k"]) == 0
    shown = capsys.readouterr().out
    assert "max_steps: 50000" in shown and "max_epoch: 100" in shown
    assert main(["presets", "task_mlm_itm"]) == 0
    assert "vit: vit_base_patch32_384" in capsys.readouterr().out  # its _base is expanded

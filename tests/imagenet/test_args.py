"""The reference's command line: every argument with its default (fact sheet §8.2), the launcher's
spellings, and bad values refused before anything runs."""
import pytest

from vlkit.cli import main as vlkit_main
from vlkit.imagenet.args import get_args_parser
from vlkit.cli.imagenet import cli

REFERENCE_DEFAULTS = {
    "batch_size": 64, "epochs": 50, "accum_iter": 1, "model": "vit_large_patch16", "input_size": 224,
    "drop_path": 0.1, "clip_grad": None, "weight_decay": 0.05, "lr": None, "blr": 1e-3, "layer_decay": 0.75,
    "min_lr": 1e-6, "warmup_epochs": 5, "color_jitter": None, "aa": "rand-m9-mstd0.5-inc1", "smoothing": 0.1,
    "reprob": 0.25, "remode": "pixel", "recount": 1, "resplit": False, "mixup": 0, "cutmix": 0,
    "cutmix_minmax": None, "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "batch", "finetune": "",
    "global_pool": True, "data_path": "/datasets01/imagenet_full_size/061417/", "nb_classes": None,
    "output_dir": "./output_dir", "log_dir": "./output_dir", "device": "cuda", "seed": 0, "resume": "",
    "start_epoch": 0, "eval": False, "dist_eval": False, "num_workers": 10, "pin_mem": True, "world_size": 1,
    "local_rank": -1, "dist_on_itp": False, "dist_url": "env://",
}
VLKIT_ADDITIONS = {"patch_size": None, "embed_dim": None, "depth": None, "num_heads": None,
                   "trust_checkpoint": False, "compile": "auto", "grad_checkpointing": 0, "optimizer_impl": "auto",
                   "strategy": "ddp", "fsdp_cpu_offload": False}
# vlkit's one changed default: --nb_classes (the reference's 1000) is read from the class folders.


def test_every_reference_argument_has_the_reference_default_and_nothing_else_is_added():
    assert vars(get_args_parser().parse_args([])) == {**REFERENCE_DEFAULTS, **VLKIT_ADDITIONS}


def test_the_vlc_readme_command_line_parses():
    words = ("--batch_size 32 --model vit_base_patch16 --finetune CKPT --epochs 100 --input_size 384 --blr 5e-4 "
             "--layer_decay 0.65 --weight_decay 0.05 --drop_path 0.1 --reprob 0.25 --mixup 0.8 --cutmix 1.0 "
             "--dist_eval --data_path ROOT --output_dir DIR").split()
    args = get_args_parser().parse_args(words)
    assert (args.batch_size, args.input_size, args.blr, args.mixup, args.cutmix, args.dist_eval) == (
        32, 384, 5e-4, 0.8, 1.0, True)


def test_flags_and_launcher_spellings():
    parser = get_args_parser()
    assert parser.parse_args(["--local-rank=3"]).local_rank == 3  # torch.distributed.launch (torch >= 2)
    assert parser.parse_args(["--local_rank", "2"]).local_rank == 2
    assert parser.parse_args(["--cls_token"]).global_pool is False
    assert parser.parse_args(["--no_pin_mem"]).pin_mem is False
    assert parser.parse_args(["--cutmix_minmax", "0.2", "0.8"]).cutmix_minmax == [0.2, 0.8]


@pytest.mark.parametrize("words, message", [
    (["--eval"], "--eval needs the weights"),
    (["--mixup", "0.8", "--batch_size", "3"], "must be even"),
    (["--cutmix_minmax", "0.3"], "two numbers"),
    (["--grad_checkpointing", "-2"], "--grad_checkpointing -2: give N >= 0 blocks, or -1 for every block"),
    (["--mixup_mode", "row"], "--mixup_mode 'row'"),
    (["--accum_iter", "0"], "--accum_iter 0"),
    (["--fsdp_cpu_offload"], "--fsdp_cpu_offload offloads FSDP shards: add --strategy fsdp"),
])
def test_bad_values_exit_with_status_2_naming_the_argument(words, message, capsys):
    assert cli(words) == 2
    assert message in capsys.readouterr().err


def test_vlkit_imagenet_reaches_the_same_command_line(capsys):
    assert vlkit_main(["imagenet", "--eval"]) == 2  # main_finetune.py itself runs in test_dist_eval.py
    assert "--eval needs the weights" in capsys.readouterr().err

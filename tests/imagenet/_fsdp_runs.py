"""Runs several ``main_finetune.py`` command lines in one process group, with a ``train`` record
per iteration: ``python _fsdp_runs.py RUNS_JSON`` under torchrun (RUNS_JSON: a list of word lists)."""
import json
import sys

from vlkit.cli.imagenet import main
from vlkit.imagenet import train
from vlkit.imagenet.args import check_args, get_args_parser
from vlkit.utils.distributed import destroy_distributed

if __name__ == "__main__":
    train.LOG_EVERY = 1
    for words in json.loads(open(sys.argv[1]).read()):
        main(check_args(get_args_parser().parse_args(words)))
    destroy_distributed()

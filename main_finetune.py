#!/usr/bin/env python
"""ImageNet fine-tuning of a ViT (VLC's `imagenet_classification/main_finetune.py` command line);
the same as `vlkit imagenet ...`. See vlkit/imagenet/.

Launch distributed with `torchrun --nproc_per_node=N main_finetune.py ...` or
`python -m torch.distributed.launch --use_env --nproc_per_node=N main_finetune.py ...`.
"""
import sys

from vlkit.cli.imagenet import cli

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))

#!/usr/bin/env python
"""ALBEF/GRIT-VLP command line: `Pretrain.py --config ./configs/... --output_dir ...` (see vlkit/cli/albef.py).

Launch distributed with `torchrun --nproc_per_node=N Pretrain.py ...` or
`python -m torch.distributed.launch --use_env --nproc_per_node=N Pretrain.py ...`.
"""
import sys

from vlkit.cli.albef import main

if __name__ == "__main__":
    sys.exit(main("Pretrain.py", sys.argv[1:]))

#!/usr/bin/env python
"""ALBEF/GRIT-VLP command line: `Retrieval.py --config ./configs/... --output_dir ...` (see vlkit/cli/albef.py).

Launch distributed with `torchrun --nproc_per_node=N Retrieval.py ...` or
`python -m torch.distributed.launch --use_env --nproc_per_node=N Retrieval.py ...`.
"""
import sys

from vlkit.cli.albef import main

if __name__ == "__main__":
    sys.exit(main("Retrieval.py", sys.argv[1:]))

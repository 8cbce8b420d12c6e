"""One gloo rank of the distributed retrieval test: ``python retrieval_worker.py OUT_JSON``."""
import json
import sys

import torch.distributed as dist

from _retrieval_fakes import NUM_IMAGES, FakeCrossEncoder, image_batches, pair_score, texts
from vlkit.eval.retrieval_eval import RetrievalEvaluator

if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for protocol in ("exact", "fast"):
        evaluator = RetrievalEvaluator(FakeCrossEncoder(), pair_score, protocol, k_test=3, pairs_per_batch=5, progress=False)
        results[protocol] = evaluator.evaluate(image_batches(range(rank, NUM_IMAGES, world)), texts())
    if rank == 0:
        with open(sys.argv[1], "w") as handle:
            json.dump(results, handle)
    dist.destroy_process_group()

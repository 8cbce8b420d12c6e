#!/usr/bin/env bash
# The GPU measurements of docs/performance.md in one run of under 8 minutes (465 s of limits) on one H100:
#   1. the CUDA-only tests (sync-debug steps, flash/efficient attention per family, fused AdamW),
#   2. every family at base size in fp32 and bf16 eager,
#   3. bf16 + compile, then bf16 + compile + activation checkpointing,
#   4. the largest batch with and without checkpointing (time-limited search).
# Each part has its own time limit, so a slow part cannot starve the rest; results go to
# $OUT (or ./gpu_check_out): *.json, *.md and the logs.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine
#   SIZES=tiny DEVICE=cpu bash benchmarks/gpu_check.sh   # a dry run of the script on a CPU
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
SIZES=${SIZES:-base}
DEVICE=${DEVICE:-cuda}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
bench() {  # bench NAME LIMIT_SECONDS ARGS...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s, at $(elapsed)s)"
  timeout "$limit" "$PY" benchmarks/train_step.py --sizes "$SIZES" --device "$DEVICE" --data "$OUT/data" \
    --json "$OUT/$name.json" "$@" | tee "$OUT/$name.md"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"; \
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee "$OUT/machine.txt"

echo "== CUDA tests (limit 45s)"
timeout 45 "$PY" -m pytest -q -p no:cacheprovider -rs tests/tasks/test_step_device_work.py 2>&1 | tail -25 | tee "$OUT/cuda_tests.txt"

# every setting is its own process (~10 s of start-up each): the lists are sized to the limits
bench eager 150 --families vlc,meter,elip,albef,clipvil --modes fp32,bf16 --steps 5 --warmup 2
bench compile 160 --families vlc,elip,albef,clipvil --modes bf16_compile --steps 5 --warmup 3
bench compile_ac 60 --families vlc --modes bf16_compile_ac --steps 5 --warmup 3
if [ "$DEVICE" = cuda ]; then
  bench batch_search 60 --families vlc --modes bf16 --steps 1 --warmup 1 --batch-search 12
fi
echo "== done in $(elapsed)s; results in $OUT"

#!/usr/bin/env bash
# CLIP-ViL VQA fine-tuning and testing with the reference's command line
# (CLIP-ViL-Pretrain/scripts/finetune_vqa.bash):
#
#   bash scripts/finetune_vqa.bash GPUS OUTPUT PORT NPROC_PER_NODE [--flags...] [PRESET... key=value...]
#
# OUTPUT is the output folder itself (e.g. snap/vqa/vqa_clip_rn50x4): log.log, version_K/, BEST.pth,
# LAST.pth, and with --test test (or minival) test_predict.json (minival_predict.json).
# GPUS, PORT, NPROC_PER_NODE, NNODES and MASTER_ADDR as in scripts/pretrain.bash.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: bash scripts/finetune_vqa.bash GPUS OUTPUT PORT NPROC_PER_NODE [--flags...]" >&2
  exit 2
fi
GPUS=$1; OUTPUT=$2; PORT=$3; NPROC_PER_NODE=$4; shift 4
DEVICE=auto
if [ "$GPUS" = "cpu" ]; then export CUDA_VISIBLE_DEVICES=""; DEVICE=cpu; else export CUDA_VISIBLE_DEVICES=$GPUS; fi
mkdir -p "$OUTPUT"
cp "$0" "$OUTPUT/run.bash"
"${PYTHON:-python}" -m torch.distributed.run --nnodes="${NNODES:-1}" --nproc_per_node="$NPROC_PER_NODE" \
  --rdzv_backend=c10d --rdzv_endpoint="${MASTER_ADDR:-127.0.0.1}:$PORT" --rdzv_id="clipvil_vqa_$(basename "$OUTPUT")" \
  -m vlkit.cli.clipvil vqa \
  --distributed --train train,nominival --valid minival --tqdm --output "$OUTPUT" --input_raw_images --use_clip \
  --numWorkers 10 --batchSize 2 --optim bert --lr 1e-5 --epochs 10 --llayers 12 --xlayers 0 --rlayers 0 \
  --visualbert_style --vqa_style_transform --clip_model_name RN50 --fp16 --add_zero_padding --device "$DEVICE" \
  "$@" 2>&1 | tee "$OUTPUT/log.log"

#!/usr/bin/env bash
# CLIP-ViL pre-training with the reference's command line (CLIP-ViL-Pretrain/scripts/pretrain.bash):
#
#   bash scripts/pretrain.bash GPUS NAME PORT NPROC_PER_NODE [--flags...] [PRESET... key=value...]
#
# GPUS            CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3,4,5,6,7 ("cpu" runs on the CPU)
# NAME            the run: everything goes to snap/pretrain/NAME (log.log, version_K/, EpochNN_LXRT*.pth)
# PORT            the rendezvous port
# NPROC_PER_NODE  processes on this node, one per GPU (the reference's README calls it NUM_NODES; it never was)
#
# Several nodes: run the same command on every node with NNODES=<nodes> and MASTER_ADDR=<first node's
# address>; torchrun's c10d rendezvous forms the job. Later flags override the fixed ones below (as
# argparse did in the reference); words without -- are vlkit presets / key=value overrides.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: bash scripts/pretrain.bash GPUS NAME PORT NPROC_PER_NODE [--flags...]" >&2
  exit 2
fi
GPUS=$1; NAME=$2; PORT=$3; NPROC_PER_NODE=$4; shift 4
OUTPUT=snap/pretrain/$NAME
DEVICE=auto
if [ "$GPUS" = "cpu" ]; then export CUDA_VISIBLE_DEVICES=""; DEVICE=cpu; else export CUDA_VISIBLE_DEVICES=$GPUS; fi
mkdir -p "$OUTPUT"
cp "$0" "$OUTPUT/run.bash"
"${PYTHON:-python}" -m torch.distributed.run --nnodes="${NNODES:-1}" --nproc_per_node="$NPROC_PER_NODE" \
  --rdzv_backend=c10d --rdzv_endpoint="${MASTER_ADDR:-127.0.0.1}:$PORT" --rdzv_id="clipvil_pretrain_$NAME" \
  -m vlkit.cli.clipvil pretrain \
  --taskMaskLM --taskMatched --visualLosses obj,attr,feat --wordMaskRate 0.15 \
  --train mscoco_train,mscoco_nominival,vgnococo --valid mscoco_minival \
  --batchSize 256 --optim bert --lr 1e-4 --epochs 20 --tqdm --llayers 12 --xlayers 0 --rlayers 0 \
  --visualbert_style --input_raw_images --vqa_style_transform --objMaskRate 0.0 --numWorkers 0 \
  --clip_model_name RN50 --use_clip --distributed --device "$DEVICE" --output "$OUTPUT" \
  "$@" 2>&1 | tee "$OUTPUT/log.log"

#!/usr/bin/env bash
# Uni-Sign stage 1: pose-only pretraining (4 GPUs, batch 16 x 8, 20 epochs, lr 3e-4, at most 2,048 steps an
# epoch) on CSL-News, or on another stage-1 corpus:
#   bash script/pretrain.sh DATASET=YouTubeASL     (or DATASET=YouTubeASL bash script/pretrain.sh)
#   bash script/pretrain.sh --captions DIR         (any folder of long-video pose files beside their captions)
# (docs/captions.md). Then: CKPT=out/pretraining/best_checkpoint.pth bash script/train.sh
# Several nodes: HOSTFILE=... (see script/launch.sh).
case "$1" in DATASET=*) DATASET=${1#DATASET=}; shift ;; esac
. "$(dirname "$0")/launch.sh"
output_dir=${OUTPUT_DIR:-out/pretraining}
launch pretraining.py 4 \
   --batch_size 16 --gradient_accumulation_steps 8 --epochs 20 --lr 3e-4 --quick_break 2048 \
   --dataset "${DATASET:-CSL_News}" --task SLT --output_dir "$output_dir" --wandb "$@"

#!/usr/bin/env bash
# Uni-Sign stage 1: pose-only pretraining on CSL-News (4 GPUs, batch 16 x 8, 20 epochs, lr 3e-4,
# at most 2,048 steps an epoch). Then: CKPT=out/pretraining/best_checkpoint.pth bash script/train.sh
# Several nodes: HOSTFILE=... (see script/launch.sh).
. "$(dirname "$0")/launch.sh"
output_dir=${OUTPUT_DIR:-out/pretraining}
launch pretraining.py 4 \
   --batch_size 16 --gradient_accumulation_steps 8 --epochs 20 --lr 3e-4 --quick_break 2048 \
   --dataset CSL_News --task SLT --output_dir "$output_dir" --wandb "$@"

#!/usr/bin/env bash
# The release's fine-tuning run: Geo-Sign token mode on CSL-Daily, from the stage-1 checkpoint.
# Paths (mT5, labels, poses) come from config.py. NUM_GPUS=4, or HOSTFILE=... for several nodes: script/launch.sh.
. "$(dirname "$0")/launch.sh"
output_dir=${OUTPUT_DIR:-out/geo_sign_csl_daily}
ckpt=${CKPT:-checkpoints/pretraining.pth}
require_checkpoint "$ckpt"
launch fine_tuning.py 1 \
   --batch_size 8 \
   --gradient_accumulation_steps 8 \
   --epochs 40 \
   --opt adamw \
   --lr 1e-4 \
   --output_dir "$output_dir" \
   --finetune "$ckpt" \
   --dataset CSL_Daily \
   --task SLT \
   --use_hyperbolic \
   --init_c 1.0 \
   --hyp_text_emb_src decoder \
   --hyp_text_cmp token \
   --alpha 0.7 \
   --wandb "$@"

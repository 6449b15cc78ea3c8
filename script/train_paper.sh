#!/usr/bin/env bash
# The paper's recipe (Table 7): 4 GPUs, batch 8 x accumulation 8, 40 epochs, AdamW 3e-5, cosine with
# 5 warmup epochs to 1e-6, clipping 1.0, bf16, ZeRO-2, Riemannian Adam 1e-3, c0 = 1.5, alpha 0.7, seed 42.
# Several nodes: HOSTFILE=... (see script/launch.sh).
. "$(dirname "$0")/launch.sh"
output_dir=${OUTPUT_DIR:-out/geo_sign_paper}
ckpt=${CKPT:-checkpoints/pretraining.pth}
require_checkpoint "$ckpt"
launch fine_tuning.py 4 \
   --batch_size 8 --gradient_accumulation_steps 8 --epochs 40 \
   --opt adamw --lr 3e-5 --warmup-epochs 5 --min-lr 1e-6 --gradient_clipping 1.0 \
   --dtype bf16 --zero_stage 2 --seed 42 \
   --output_dir "$output_dir" --finetune "$ckpt" --dataset CSL_Daily --task SLT \
   --use_hyperbolic --init_c 1.5 --hyp_lr 1e-3 --hyp_text_emb_src decoder --hyp_text_cmp token --alpha 0.7 \
   --wandb "$@"

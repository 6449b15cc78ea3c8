#!/usr/bin/env bash
# Score a checkpoint (default: the released best.pth) on CSL-Daily dev and test: train.sh's flags plus --eval.
# NUM_GPUS, HOSTFILE, ... as for train.sh (script/launch.sh).
OUTPUT_DIR=${OUTPUT_DIR:-out/eval_csl_daily} CKPT=${CKPT:-checkpoints/best.pth} \
    exec bash "$(dirname "$0")/train.sh" --eval "$@"

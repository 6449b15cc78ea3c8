#!/usr/bin/env bash
# The newcomer's first run: set up, build the built-in demo data, train Geo-Sign (token mode) on it
# and evaluate dev and test after every epoch; then export the best model as a folder, draw its
# embedding space, measure what each body part contributes and write the run's report (one HTML file).
# No download, no GPU needed (about 5 minutes on 2 CPU cores, and 2 more for the part importance).
#   bash script/demo.sh [extra fine_tuning.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash script/setup.sh
. .venv/bin/activate
if [ ! -f data/demo/labels.train ] || [ ! -f pretrained_weight/mt5-demo/config.json ]; then
    python script/make_demo.py
fi
args=(--dataset Demo --task SLT --mt5_path pretrained_weight/mt5-demo --output_dir out/demo --overwrite
      --use_hyperbolic --hyp_text_cmp token --hyp_text_emb_src decoder --alpha 0.7
      --epochs ${DEMO_EPOCHS:-7} --batch_size 8 --lr 1e-3 --warmup-epochs 1 --min-lr 1e-5
      --num_workers 0 --num_beams 4 --max_tgt_len 40 --seed 42)
if command -v nvidia-smi >/dev/null 2>&1; then
    deepspeed --num_gpus 1 fine_tuning.py "${args[@]}" "$@"
else
    python fine_tuning.py "${args[@]}" "$@"
fi
# Share the best model as a pickle-free folder (weights, mT5, tokenizer, model card), then draw the
# Poincaré-ball embeddings it learnt for the test videos (from the folder: no --mt5_path needed).
rm -rf out/demo/model
python script/export_model.py out/demo/best_checkpoint.pth out/demo/model
python script/plot_embeddings.py --finetune out/demo/model --dataset Demo --split test --output_dir out/demo/embeddings
# What each body part contributes to the translations (each removed in turn), then the whole run in one page
python script/part_importance.py --finetune out/demo/model --dataset Demo --split test --output_dir out/demo/part_importance
python script/report.py out/demo

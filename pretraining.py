"""Uni-Sign stage 1: pose-only translation pretraining on CSL-News-format data (JSON labels) or on long videos
with timed captions (YouTube-ASL, or any folder of them: docs/captions.md).

    deepspeed --num_gpus 4 pretraining.py --batch_size 16 --gradient_accumulation_steps 8 ...
    deepspeed --num_gpus 4 pretraining.py --dataset YouTubeASL ...
    python pretraining.py --captions DIR ...   # DIR: VIDEO.pkl beside VIDEO.vtt / VIDEO.srt

The loops are fine_tuning.py's; only the defaults differ (Uni-Sign's stage-1 recipe: CSL-News,
20 epochs, lr 3e-4, at most 2,048 steps an epoch). The checkpoints it writes are what
`fine_tuning.py --finetune` loads. Add --use_hyperbolic to pretrain with the Geo-Sign branch.
"""
import argparse

import captions
import fine_tuning
import settings
import utils


def get_args_parser():
    parser = argparse.ArgumentParser("Uni-Sign pose-only pretraining", parents=[fine_tuning.get_args_parser()])
    parser.set_defaults(dataset="CSL_News", task="SLT", epochs=20, lr=3e-4, batch_size=16,
                        gradient_accumulation_steps=8, quick_break=2048, output_dir="out/pretraining")
    return parser


if __name__ == "__main__":
    try:
        fine_tuning.run(captions.resolve_captions(settings.parse_command_line(get_args_parser())))
    finally:
        utils.freeze_long_lived_objects()  # a quick exit

"""Translate sign language videos with a trained model: poses are extracted, then the model's beam search runs.

    python script/translate_video.py VIDEO [VIDEO ...] --finetune CHECKPOINT|MODEL_FOLDER [--mt5_path MT5]
        [--language Chinese|English] [--json] [--save_pose DIR] [--det_model X.onnx --pose_model Y.onnx]

Each video goes through evaluation's own path: its pose pickle is read by datasets.PoseDataset (the same
frame selection and normalisation as a dev/test sample), batched by PoseCollator and translated by
Uni_Sign.generate, one video per batch (so a translation does not depend on the other videos). Prints one
line per video, `VIDEO: TRANSLATION` (with --json, one JSON object per line). The prompt speaks the
language of the checkpoint's dataset unless --language says otherwise. Exit code 1 when a video failed.
"""
import argparse
import json
import os
import sys
import tempfile
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model_io  # noqa: E402
import pose_extraction  # noqa: E402
import utils  # noqa: E402
from extract_poses import add_model_args  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--finetune", required=True, help="trained checkpoint (e.g. out/demo/best_checkpoint.pth) or model folder")
    p.add_argument("--mt5_path", default=None, help="mT5 folder (default: the model folder's or the checkpoint's, else config.mt5_path)")
    p.add_argument("--language", choices=["Chinese", "English"], default=None,
                   help="prompt language (default: that of the checkpoint's dataset)")
    p.add_argument("--json", action="store_true", help="one JSON object per video and line")
    p.add_argument("--save_pose", default=None, metavar="DIR", help="also keep each video's pose pickle in DIR")
    p.add_argument("--num_beams", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--max_tgt_len", type=int, default=None, help="new tokens at most (default: the checkpoint's)")
    add_model_args(p)
    return p


def main(args):
    utils.silence_known_notices()
    import torch
    import datasets
    for flag, value in (("--num_beams", args.num_beams), ("--max_tgt_len", args.max_tgt_len)):
        if value is not None and value < 1:
            utils.fail(f"{flag} must be at least 1 (got {value}); leave it out to use the checkpoint's")
    if args.save_pose:
        utils.ensure_writable_dir(args.save_pose, "--save_pose")
        stems = Counter(os.path.splitext(os.path.basename(video))[0] for video in args.videos)
        shared = sorted(stem for stem, count in stems.items() if count > 1)  # once over a glob of many videos
        if shared:  # each pose file is <stem>.pkl in one folder: the later video's would replace the earlier's
            utils.fail(f"--save_pose {args.save_pose}: several videos are named {shared[0]!r} (without folder and "
                       "extension), so their pose files would overwrite each other; translate them in separate runs "
                       "with separate --save_pose folders, or use script/extract_poses.py, which mirrors the folders")
    for video in args.videos:
        if not os.path.isfile(video):
            utils.fail(f"{video}: no such video file")
    try:
        model, read = model_io.load_model(args.finetune, args.mt5_path)
        train_args = argparse.Namespace(**read["args"])
        estimator = pose_extraction.PoseEstimator(args.mode, args.det_model, args.pose_model, args.device)
    except (FileNotFoundError, ValueError) as error:  # ModelError is a ValueError
        utils.fail(str(error))
    device = "cuda" if args.device == "cuda" and torch.cuda.is_available() else "cpu"
    model.to(device)
    dataset_name = getattr(train_args, "dataset", "CSL_Daily")
    collator = datasets.PoseCollator(model.mt5_tokenizer, dataset_name)
    if args.language:
        collator.prompt = datasets.PROMPTS[args.language]
    num_beams = args.num_beams if args.num_beams is not None else getattr(train_args, "num_beams", 4)
    max_new_tokens = args.max_tgt_len if args.max_tgt_len is not None else getattr(train_args, "max_tgt_len", 100)
    failed = 0
    with tempfile.TemporaryDirectory() as scratch:
        pose_dir = args.save_pose or scratch
        for video in args.videos:
            pose_path = os.path.join(pose_dir, os.path.splitext(os.path.basename(video))[0] + ".pkl")
            try:
                pose = pose_extraction.extract_video(video, estimator, progress=not args.json)
                pose_extraction.write_pose(pose, pose_path)
            except pose_extraction.ExtractionError as error:
                sys.stderr.write(f"error: {error}\n")
                failed += 1
                continue
            sample = {"name": video, "pose_path": pose_path, "text": ""}
            dataset = datasets.PoseDataset(dataset_name, "test", [sample], max_length=getattr(train_args, "max_length", 256))
            item = dataset[0]
            translation = model.generate(collator([item]), num_beams=num_beams, max_new_tokens=max_new_tokens)[0]
            if args.json:
                print(json.dumps({"video": video, "translation": translation, "frames": len(pose["keypoints"]),
                                  "frames_used": int(item["pose"]["body"].shape[0]),
                                  "fallback_frames": pose["num_fallback_frames"],
                                  "pose_file": pose_path if args.save_pose else None}, ensure_ascii=False))
            else:
                print(f"{video}: {translation}")
            sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(get_args_parser().parse_args()))
    finally:
        utils.freeze_long_lived_objects()  # a quick exit

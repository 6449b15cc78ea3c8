"""Translate sign language videos with a trained model: poses are extracted, then the model's beam search runs.

    python script/translate_video.py VIDEO [VIDEO ...] --finetune CHECKPOINT|MODEL_FOLDER [--mt5_path MT5]
        [--language Chinese|English|German] [--json] [--save_pose DIR] [--render DIR] [--fps 25]
        [--det_model X.onnx --pose_model Y.onnx]

A VIDEO is a video file, a folder of numbered frame images (at --fps), or a pose file already extracted (.pkl,
or a pose-format .pose of any layout pose_layouts.py knows: one warning line when it is not the RTMPose
layout the model was trained on).

Each video goes through evaluation's own path: its pose pickle is read by datasets.PoseDataset (the same
frame selection and normalisation as a dev/test sample), batched by PoseCollator and translated by
Uni_Sign.generate, one video per batch (so a translation does not depend on the other videos). Prints one
line per video, `VIDEO: TRANSLATION` (with --json, one JSON object per line). The prompt speaks the
language of the checkpoint's dataset unless --language says otherwise. Exit code 1 when a video failed.
--render DIR writes each video with its skeleton and the translation as a subtitle (DIR/<name>.mp4, and the
subtitle as DIR/<name>.srt, which players show in any script).
"""
import argparse
import json
import os
import sys
import tempfile
from collections import Counter

import model_io
import pose_extraction
import pose_files
import utils
from extract_poses import add_model_args
from models import Uni_Sign


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--finetune", required=True, help="trained checkpoint (e.g. out/demo/best_checkpoint.pth) or model folder")
    p.add_argument("--mt5_path", default=None, help="mT5 folder (default: the model folder's or the checkpoint's, else config.mt5_path)")
    p.add_argument("--language", choices=["Chinese", "English", "German"], default=None,
                   help="prompt language (default: that of the checkpoint's dataset)")
    p.add_argument("--json", action="store_true", help="one JSON object per video and line")
    p.add_argument("--save_pose", default=None, metavar="DIR", help="also keep each video's pose pickle in DIR")
    p.add_argument("--render", default=None, metavar="DIR",
                   help="write each video with its skeleton and translation (subtitle) to DIR/<name>.mp4 and .srt")
    p.add_argument("--fps", type=float, default=None, help="frame rate of frame folders (default 25)")
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
    for flag, folder in (("--save_pose", args.save_pose), ("--render", args.render)):
        if folder:
            check_output_folder(args.videos, flag, folder)
    for video in args.videos:
        if not (os.path.isfile(video) or pose_extraction.is_frame_folder(video)):
            utils.fail(f"{video}: no such video file or frame folder")
    try:
        read = model_io.read_model(args.finetune)
        model = Uni_Sign.from_pretrained(args.finetune, args.mt5_path, read=read)
        train_args = argparse.Namespace(**read["args"])
        estimator = None  # built only when a video needs extracting
        if not all(video.endswith((".pkl", pose_files.POSE_EXTENSION)) for video in args.videos):
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
            given = video.endswith((".pkl", pose_files.POSE_EXTENSION))  # poses already extracted
            pose_path = video if given else os.path.join(pose_dir, stem(video) + ".pkl")
            try:
                if not given:
                    pose = pose_extraction.extract_video(video, estimator, progress=not args.json, fps=args.fps)
                    pose_extraction.write_pose(pose, pose_path)
                sample = {"name": video, "pose_path": pose_path, "text": ""}
                dataset = datasets.PoseDataset(dataset_name, "test", [sample],
                                               max_length=getattr(train_args, "max_length", 256))
                item = dataset[0]
            except (pose_extraction.ExtractionError, datasets.BadSampleError) as error:
                sys.stderr.write(f"error: {error}\n")
                failed += 1
                continue
            warning = pose_files.layout_mismatch_warning([pose_path])
            if warning:
                sys.stderr.write(warning + "\n")
            frames = int(len(pose["keypoints"]) if not given else len(datasets.load_pose(pose_path)[0]))
            translation = model.generate(collator([item]), num_beams=num_beams, max_new_tokens=max_new_tokens)[0]
            if args.json:
                print(json.dumps({"video": video, "translation": translation, "frames": frames,
                                  "frames_used": int(item["pose"]["body"].shape[0]),
                                  "fallback_frames": None if given else pose["num_fallback_frames"],
                                  "pose_file": pose_path if args.save_pose else None,
                                  "render": output_path(video, args.render, ".mp4") if args.render else None},
                                 ensure_ascii=False))
            else:
                print(f"{video}: {translation}")
            sys.stdout.flush()
            if args.render:
                render(None if given else video, pose_path, translation, args.render, progress=not args.json,
                       name=video)
    return 1 if failed else 0


def check_output_folder(videos, flag, folder):
    """The output folder `folder` of `flag` is writable, and no two videos share the <stem> their files there
    are named after (the later video's would replace the earlier's); else one error line."""
    utils.ensure_writable_dir(folder, flag)
    stems = Counter(stem(video) for video in videos)
    shared = sorted(name for name, count in stems.items() if count > 1)  # once over a glob of many videos
    if shared:
        utils.fail(f"{flag} {folder}: several videos are named {shared[0]!r} (without folder and "
                   "extension), so their files would overwrite each other; translate them in separate runs "
                   f"with separate {flag} folders, or use script/extract_poses.py, which mirrors the folders")


def stem(video):
    """A video file's, frame folder's or pose file's name without folder and extension."""
    name = os.path.basename(os.path.normpath(video))
    return name if os.path.isdir(video) else os.path.splitext(name)[0]


def output_path(video, folder, extension):
    return os.path.join(folder, stem(video) + extension)


def render(video, pose_path, translation, folder, progress, name):
    """<folder>/<name>.mp4: the video (None: a black canvas) with its skeleton and the translation under it;
    <name>.srt: the translation as a subtitle. A failure is reported on stderr; the translation stands."""
    import pose_render
    out = output_path(name, folder, ".mp4")
    try:
        clip = pose_render.read_pose(pose_path)
        frames = pose_render.render_clip([clip], out, video=video, subtitle=translation, progress=progress)
    except pose_render.RenderError as error:
        sys.stderr.write(f"{name}: not rendered: {error}\n")
        return
    pose_render.write_srt(output_path(name, folder, ".srt"), translation,
                          frames / (clip.fps or pose_render.DEFAULT_FPS))
    if pose_render.subtitle_font(translation) is None:
        sys.stderr.write(f"{out}: no installed font has this translation's characters; its subtitle is in the "
                         ".srt file only\n")


if __name__ == "__main__":
    try:
        sys.exit(main(get_args_parser().parse_args()))
    finally:
        utils.freeze_long_lived_objects()  # a quick exit

"""Extract COCO-WholeBody poses from videos into Uni-Sign pose pickles or `.pose` files (one per video).

    python script/extract_poses.py --src VIDEO_OR_FOLDER --out POSE_DIR [--mode lightweight|balanced|performance]
        [--det_model X.onnx --pose_model Y.onnx] [--device cpu|cuda] [--workers N] [--overwrite] [--preview N]
        [--format pkl|pose] [--fps 25] [--layout auto|phoenix]

Each video's pickle goes to <POSE_DIR>/<its path relative to --src, extension -> .pkl>, so that
`fine_tuning.py --pose_dir POSE_DIR` reads it for the label whose video_path is that video. A folder of
numbered frame images (png/jpg) is a video too (its frames at --fps); --layout phoenix takes PHOENIX-2014T's
features/fullFrame-210x260px as --src and writes <POSE_DIR>/<split>/<name>.pkl for its train, dev and test
frame folders, the paths its labels name. --format pose writes COCO-WholeBody `.pose` files (pose-format's). A folder run
resumes: pickles that exist are kept unless --overwrite. A video that cannot be read, or shows nobody, is
named, skipped and listed at the end; the exit code is 1 when any video failed. --preview N draws the
skeletons of the first N videos' pickles over those videos, beside the pickles (<name>.preview.mp4).
"""
import argparse
import multiprocessing
import os
import sys

import pose_extraction
import utils


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="a video, or a folder searched recursively for videos")
    p.add_argument("--out", required=True, help="pose folder (the dataset's --pose_dir)")
    add_model_args(p)
    p.add_argument("--workers", type=int, default=1, help="videos extracted at once (processes)")
    p.add_argument("--overwrite", action="store_true", help="extract again videos whose pickle exists")
    p.add_argument("--format", default="pkl", choices=sorted(pose_extraction.FORMATS),
                   help="pose pickles (the default) or pose-format `.pose` files")
    p.add_argument("--fps", type=float, default=None,
                   help=f"frame rate of frame folders (default {pose_extraction.FRAME_FOLDER_FPS:g}, PHOENIX-2014T's)")
    p.add_argument("--layout", default="auto", choices=["auto", "phoenix"],
                   help="phoenix: --src is PHOENIX-2014T's fullFrame-210x260px folder ({train,dev,test}/<name>/)")
    p.add_argument("--preview", type=int, default=0, metavar="N",
                   help="render the first N videos with their skeletons next to their pickles (.preview.mp4)")
    return p


def add_model_args(p):
    """The pose-model flags, shared with translate_video.py."""
    p.add_argument("--mode", default="lightweight", choices=pose_extraction.MODES,
                   help="rtmlib's model pair (downloaded once; lightweight is what Uni-Sign's demo used)")
    p.add_argument("--det_model", default=None, help="local YOLOX ONNX file instead of --mode's")
    p.add_argument("--pose_model", default=None, help="local RTMPose/RTMW ONNX file instead of --mode's")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="onnxruntime's device")


def estimator_settings(args, threads=None):
    return {"mode": args.mode, "det_model": args.det_model, "pose_model": args.pose_model,
            "device": args.device, "threads": threads}


_estimator = None  # one per worker process


def _init_worker(settings):
    global _estimator
    _estimator = pose_extraction.PoseEstimator(**settings)


def _extract_one(job):
    """(video, output path, fps) -> (video, None, frames, fallback frames) or (video, error message, 0, 0)."""
    video, out_path, fps = job
    try:
        pose = pose_extraction.extract_video(video, _estimator, fps=fps)
        pose_extraction.write_pose(pose, out_path)
    except (pose_extraction.ExtractionError, OSError) as error:
        return video, str(error), 0, 0
    return video, None, len(pose["keypoints"]), pose["num_fallback_frames"]


def collect(results, total):
    """Run the jobs behind `results` under a progress bar; returns (videos done, fallback frames, failures)."""
    from tqdm import tqdm
    done, fallback_total, failures = 0, 0, []
    with tqdm(total=total, desc="videos", unit="video", dynamic_ncols=True) as bar:
        for video, error, frames, fallback in results:
            if error:
                failures.append(error)
                bar.write(f"skipped: {error}")
            else:
                done += 1
                fallback_total += fallback
                if fallback:
                    bar.write(f"{video}: {fallback} of {frames} frames without a detected person (whole-frame fallback)")
            bar.update()
    return done, fallback_total, failures


def main(args):
    if not os.path.exists(args.src):
        utils.fail(f"--src {args.src}: no such file or folder")
    if args.workers < 1:
        utils.fail(f"--workers {args.workers}: must be at least 1")
    if args.preview < 0:
        utils.fail(f"--preview {args.preview}: must be 0 (none) or a number of videos")
    if args.fps is not None and not args.fps > 0:
        utils.fail(f"--fps {args.fps}: must be positive")
    videos = phoenix_videos(args.src) if args.layout == "phoenix" else pose_extraction.find_videos(args.src)
    if not videos:
        utils.fail(f"--src {args.src}: no videos ({', '.join(pose_extraction.VIDEO_EXTENSIONS)}) or frame folders "
                   f"({', '.join(pose_extraction.FRAME_EXTENSIONS)} images) found there")
    utils.ensure_writable_dir(args.out, "--out")  # else every video would fail, one by one, after its extraction
    extension = pose_extraction.FORMATS[args.format]
    jobs = [(video, pose_extraction.pose_path_for(video, args.src, args.out, extension), args.fps) for video in videos]
    todo = [job for job in jobs if args.overwrite or not os.path.isfile(job[1])]
    existing = len(jobs) - len(todo)
    if existing:
        print(f"{existing} of {len(jobs)} videos already have a pose file in {args.out}: kept (--overwrite redoes them)")
    if not todo:
        print(f"nothing to extract: every video under {args.src} has its pose file")
        write_previews(jobs, args.preview)
        return 0
    workers = min(args.workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    settings = estimator_settings(args, threads)
    try:  # built here even when workers do the work: a bad flag or model fails once, clearly, and a download
        _init_worker(settings)  # happens once, before the workers read rtmlib's cache
    except pose_extraction.ModelError as error:
        utils.fail(str(error))
    if workers == 1:
        done, fallback_total, failures = collect(map(_extract_one, todo), len(todo))
    else:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
            done, fallback_total, failures = collect(pool.imap_unordered(_extract_one, todo), len(todo))
    print(f"extracted {done} videos into {args.out} ({fallback_total} frames used the whole-frame fallback); "
          f"{existing} already there; {len(failures)} failed")
    for error in failures:
        print(f"  failed: {error}")
    write_previews(jobs, args.preview)
    return 1 if failures else 0


PHOENIX_SPLITS = ("train", "dev", "test")


def phoenix_videos(src):
    """PHOENIX-2014T's frame folders <src>/<split>/<name>/ of the three splits; one error line when --src is
    not the corpus's fullFrame-210x260px folder."""
    missing = [split for split in PHOENIX_SPLITS if not os.path.isdir(os.path.join(src, split))]
    if missing:
        utils.fail(f"--src {src} --layout phoenix: no {'/'.join(missing)} folder in it; point --src at the "
                   "corpus's features/fullFrame-210x260px (which holds train/, dev/ and test/)")
    videos = []
    for split in PHOENIX_SPLITS:
        folder = os.path.join(src, split)
        videos += [os.path.join(folder, name) for name in sorted(os.listdir(folder))
                   if os.path.isdir(os.path.join(folder, name))]
    return videos


def write_previews(jobs, count):
    """Skeletons over the videos of the first `count` (video, pickle) jobs whose pickle exists, written beside
    the pickle as <name>.preview.mp4; one that cannot be drawn is named and skipped."""
    import pose_render
    done = [(video, pose) for video, pose, _ in jobs if os.path.isfile(pose)][:count]
    for video, pose in done:
        out = os.path.splitext(pose)[0] + ".preview.mp4"
        try:
            pose_render.render_clip([pose_render.read_pose(pose)], out, video=video, parts=True)
        except pose_render.RenderError as error:
            print(f"  preview skipped: {error}")
            continue
        print(f"  preview: {out}")


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))

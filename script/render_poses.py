"""Draw the skeletons of pose files into a video, a GIF or a still: to see what a pose file holds, what the
model reads of it, and how two extractions of one video differ.

    python script/render_poses.py POSE.pkl [POSE2.pkl ...] --out clip.mp4|clip.gif|frame.png [--video SRC.mp4]
        [--parts] [--faded] [--fps N] [--size WxH] [--frame N] [--threshold 0.3]

Pose files are pickles or `.pose` files (another estimator's layout is drawn as the model reads it, on
COCO-WholeBody's points). Every frame's COCO-WholeBody skeleton (body, both hands, face) is drawn over the
source video or frame folder (--video: the
pose file's w_h places its points, and the video must have its frame count and size) or on a black canvas.
Points whose score is at or under the model's threshold (0.3) are left out (--faded: drawn dim); --parts
enlarges the points the model reads and greys the rest. Several pose files go side by side, each labelled
with its file name, frames aligned on the source video's frame index (a pickle's start/end kept), e.g. a
released pickle next to one's own extraction. A .png writes the output's frame --frame only.
"""
import argparse
import os
import sys

import pose_render
import utils


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("poses", nargs="+", metavar="POSE.pkl",
                   help="pose pickles or pose-format .pose files of any known layout (several: side by side)")
    p.add_argument("--out", required=True, help="output: .mp4 (OpenCV), .gif (Pillow) or .png (one frame)")
    p.add_argument("--video", default=None,
                   help="the source video or frame folder to draw over (default: a black canvas)")
    p.add_argument("--parts", action="store_true", help="enlarge the points the model reads, grey the others")
    p.add_argument("--faded", action="store_true", help="draw low-confidence points dim instead of leaving them out")
    p.add_argument("--threshold", type=float, default=pose_render.CONFIDENCE_THRESHOLD,
                   help="points scored at or under it count as not found (default: the model's)")
    p.add_argument("--fps", type=float, default=None, help="default: the pose file's, the video's, else 25")
    p.add_argument("--size", default=None, metavar="WxH", help="canvas without --video (default: w_h, else 512x512)")
    p.add_argument("--frame", type=int, default=0, help="with a .png --out: which output frame")
    return p


def parse_size(text):
    """'WxH' -> (w, h), positive integers; else one error line naming --size."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        utils.fail(f"--size {text}: expected WIDTHxHEIGHT, e.g. 640x480")
    if width < 1 or height < 1:
        utils.fail(f"--size {text}: width and height must be positive")
    return width, height


def main(args):
    if args.fps is not None and not args.fps > 0:
        utils.fail(f"--fps {args.fps}: must be positive")
    size = parse_size(args.size) if args.size else None
    try:
        pose_render.check_output(args.out)
        clips = [pose_render.read_pose(path) for path in args.poses]
        labels = [os.path.basename(path) for path in args.poses] if len(clips) > 1 else None
        frames = pose_render.render_clip(clips, args.out, video=args.video, fps=args.fps, size=size, labels=labels,
                                         frame=args.frame, parts=args.parts, faded=args.faded,
                                         threshold=args.threshold)
    except pose_render.RenderError as error:
        utils.fail(str(error))
    print(f"wrote {args.out}: {frames} frame{'s' * (frames != 1)} of {len(clips)} pose file{'s' * (len(clips) > 1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))

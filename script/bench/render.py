"""Skeleton drawing speed: ms per frame of pose_render.render_frame (drawing only) next to the encoders'.

    python script/benchmark.py render [--frames 300] [--size 640x480] [--repeats 3]

The poses are the demo's synthetic signer (make_demo.synthesise_video: every part moving, most points
confident, so nearly every point and edge is drawn), placed over a noise frame as over a video. Timed in one
run, best of --repeats: drawing (render_frame, a copy of the frame plus the skeleton), then encoding the
drawn frames with OpenCV's mp4 writer and Pillow's GIF writer (pose_render's own). Target: drawing under
5 ms per 640x480 frame. The last line is a JSON object with draw_ms_per_frame, mp4_encode_ms_per_frame and
gif_encode_ms_per_frame.
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

import make_demo
import pose_render
from render_poses import parse_size

TARGET_MS = 5.0


def demo_poses(frames, seed=0):
    """(keypoints (frames, 133, 2), scores (frames, 133)) of the demo's synthetic signer, glosses chained."""
    rng = np.random.default_rng(seed)
    glosses = [str(g) for g in range(8)]
    motions = {g: make_demo.random_gloss_motion(rng) for g in glosses}
    keypoints, scores = [], []
    while sum(map(len, keypoints)) < frames:
        points, confidence = make_demo.synthesise_video(glosses, motions, rng)
        keypoints.append(points)
        scores.append(confidence)
    return np.concatenate(keypoints)[:frames], np.concatenate(scores)[:frames]


def time_per_frame(work, frames, repeats):
    """Best of `repeats` wall-clock runs of work(), in ms per frame."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / frames


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="640x480", type=parse_size, help="frame size WxH")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    size = args.size
    keypoints, scores = demo_poses(args.frames)
    background = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    drawn = []

    def draw():
        drawn[:] = [pose_render.render_frame(k, s, background, parts=True) for k, s in zip(keypoints, scores)]

    def encode(kind):
        def work():
            with tempfile.TemporaryDirectory() as folder:
                writer = pose_render.open_writer(os.path.join(folder, "clip" + kind), size, 25.0)
                for image in drawn:
                    writer.write(image)
                writer.close()
        return work
    draw_ms = time_per_frame(draw, args.frames, args.repeats)
    mp4_ms = time_per_frame(encode(".mp4"), args.frames, args.repeats)
    gif_ms = time_per_frame(encode(".gif"), args.frames, args.repeats)
    print(f"{args.frames} frames of {size[0]}x{size[1]}, best of {args.repeats}:")
    print(f"  drawing (copy of the frame + skeleton): {draw_ms:.2f} ms/frame (target: under {TARGET_MS:.0f})")
    print(f"  encoding: mp4 (OpenCV) {mp4_ms:.2f} ms/frame, GIF (Pillow) {gif_ms:.2f} ms/frame")
    print(json.dumps({"draw_ms_per_frame": round(draw_ms, 3), "mp4_encode_ms_per_frame": round(mp4_ms, 3),
                      "gif_encode_ms_per_frame": round(gif_ms, 3), "frames": args.frames, "size": list(size),
                      "ratio_to_target": round(draw_ms / TARGET_MS, 3)}))


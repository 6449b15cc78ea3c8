"""Pose extraction speed: the pipeline's own cost per frame next to the pose models' inference time.

    python script/benchmark.py extract [--frames 300] [--size 640x480] [--repeats 3]

A synthetic video (one moving person, script/tiny_pose_models.py) goes through pose_extraction.extract_video
and write_pose with the tiny stand-in models, whose onnxruntime sessions are timed from inside the same run:
model = time in session.run; pipeline = everything else (decode, letterbox, affine crop, normalisation,
SimCC decoding, inverse transform, person choice, pickle writing). Best of --repeats runs. Target: the
pipeline under 10 ms per frame. The last line is a JSON object with pipeline_ms_per_frame and model_ms_per_frame
(wall clock), and the same split in the main thread's CPU time (*_cpu_ms_per_frame), which other processes
sharing the cores inflate far less than the wall clock.
"""
import argparse
import json
import os
import tempfile
import time

import pose_extraction
import tiny_pose_models as tiny

TARGET_MS = 10.0


class TimedSession:
    """An onnxruntime session whose run() wall time is added up in `seconds`, the calling thread's CPU time
    in `cpu_seconds`."""

    def __init__(self, session):
        self.session, self.seconds, self.cpu_seconds = session, 0.0, 0.0

    def run(self, *args, **kwargs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.thread_time() - start_cpu

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="640x480", help="frame size WxH")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    person = (size[0] // 6, size[1] // 2)
    with tempfile.TemporaryDirectory() as folder:
        det, pose_model = tiny.make_models(folder)
        video = tiny.write_video(os.path.join(folder, "clip.mp4"),
                                 [[tiny.moving_box(t, size, person)] for t in range(args.frames)], size)
        estimator = pose_extraction.PoseEstimator(det_model=det, pose_model=pose_model)
        sessions = [TimedSession(tool.session) for tool in (estimator.detector, estimator.pose_model)]
        estimator.detector.session, estimator.pose_model.session = sessions
        runs, decode_runs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with pose_extraction.VideoReader(video) as reader:
                frames = sum(1 for _ in reader)
            decode_runs.append(time.perf_counter() - start)
            for session in sessions:
                session.seconds, session.cpu_seconds = 0.0, 0.0
            start, start_cpu = time.perf_counter(), time.thread_time()
            pose = pose_extraction.extract_video(video, estimator)
            pose_extraction.write_pose(pose, os.path.join(folder, "clip.pkl"))
            total, total_cpu = time.perf_counter() - start, time.thread_time() - start_cpu
            model, model_cpu = sum(s.seconds for s in sessions), sum(s.cpu_seconds for s in sessions)
            runs.append((total - model, model, total_cpu - model_cpu, model_cpu))
    assert frames == args.frames and len(pose["keypoints"]) == frames
    pipeline, model, pipeline_cpu, model_cpu = (1e3 * value / frames for value in min(runs))
    decode_ms = 1e3 * min(decode_runs) / frames
    print(f"{frames} frames of {size[0]}x{size[1]}, best of {args.repeats}:")
    print(f"  pipeline (decode + pre/post-processing + writing): {pipeline:.2f} ms/frame, main-thread CPU "
          f"{pipeline_cpu:.2f} ms/frame (decoding alone: {decode_ms:.2f}); target: under {TARGET_MS:.0f}")
    print(f"  model inference (tiny stand-ins; the real models cost far more): {model:.2f} ms/frame, "
          f"main-thread CPU {model_cpu:.2f}")
    print(json.dumps({"pipeline_ms_per_frame": round(pipeline, 3), "model_ms_per_frame": round(model, 3),
                      "pipeline_cpu_ms_per_frame": round(pipeline_cpu, 3), "model_cpu_ms_per_frame": round(model_cpu, 3),
                      "decode_ms_per_frame": round(decode_ms, 3), "frames": frames, "size": list(size),
                      "ratio_to_target": round(pipeline / TARGET_MS, 3)}))


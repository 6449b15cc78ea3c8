"""Pose extraction speed: the pipeline's own cost per frame next to the pose models' inference time.

    python script/benchmark.py extract [--frames 300] [--size 640x480] [--repeats 3]

A synthetic video (one moving person, script/tiny_pose_models.py) goes through pose_extraction.extract_video
and write_pose with the tiny stand-in models, whose onnxruntime sessions are timed from inside the same run:
model = time in session.run; pipeline = everything else (decode, letterbox, affine crop, normalisation,
SimCC decoding, inverse transform, person choice, pickle writing). Best of --repeats runs. Target: the
pipeline under 10 ms per frame. The last line is a JSON object with pipeline_ms_per_frame and model_ms_per_frame.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pose_extraction  # noqa: E402
import tiny_pose_models as tiny  # noqa: E402

TARGET_MS = 10.0


class TimedSession:
    """An onnxruntime session whose run() time is added up in `seconds`."""

    def __init__(self, session):
        self.session, self.seconds = session, 0.0

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

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
                session.seconds = 0.0
            start = time.perf_counter()
            pose = pose_extraction.extract_video(video, estimator)
            pose_extraction.write_pose(pose, os.path.join(folder, "clip.pkl"))
            total = time.perf_counter() - start
            model = sum(session.seconds for session in sessions)
            runs.append((total - model, model))
    assert frames == args.frames and len(pose["keypoints"]) == frames
    pipeline, model = min(runs)
    pipeline_ms, model_ms = 1e3 * pipeline / frames, 1e3 * model / frames
    decode_ms = 1e3 * min(decode_runs) / frames
    print(f"{frames} frames of {size[0]}x{size[1]}, best of {args.repeats}:")
    print(f"  pipeline (decode + pre/post-processing + writing): {pipeline_ms:.2f} ms/frame "
          f"(of which decoding alone {decode_ms:.2f}); target: under {TARGET_MS:.0f}")
    print(f"  model inference (tiny stand-ins; the real models cost far more): {model_ms:.2f} ms/frame")
    print(json.dumps({"pipeline_ms_per_frame": round(pipeline_ms, 3), "model_ms_per_frame": round(model_ms, 3),
                      "decode_ms_per_frame": round(decode_ms, 3), "frames": frames, "size": list(size),
                      "ratio_to_target": round(pipeline_ms / TARGET_MS, 3)}))


if __name__ == "__main__":
    main(sys.argv[1:])

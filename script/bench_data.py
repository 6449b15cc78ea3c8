"""Pose loading speed: load + normalise one 300-frame pose file vs a bare pickle.load of the same file.

    python script/benchmark.py data [--frames 300] [--repeats 200]

Both are measured in this process on a realistic file (RTMPose layout: lists of per-frame (1, 133, 2) and
(1, 133) float32 arrays); prints both median times and the ratio, the last line a JSON object {"ratio": ...}.
"""
import argparse
import json
import os
import pickle
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import datasets  # noqa: E402


def write_realistic_pose(path, num_frames, seed=0):
    """A signer-like pose file: body points near the centre, hands and face around them, a few low scores."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.7, (133, 2))
    keypoints = [(base + rng.normal(0, 0.01, (133, 2)))[None].astype(np.float32) for _ in range(num_frames)]
    scores = [rng.uniform(0.1, 1.0, (1, 133)).astype(np.float32) for _ in range(num_frames)]
    with open(path, "wb") as f:
        pickle.dump({"keypoints": keypoints, "scores": scores}, f, protocol=4)


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    dataset = datasets.PoseDataset("CSL_Daily", "test", [], max_length=256)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "sample.pkl")
        write_realistic_pose(path, args.frames)
        dataset.samples = [{"name": "sample", "pose_path": path, "text": ""}]

        def bare_load():
            with open(path, "rb") as f:
                pickle.load(f)

        def load_and_normalise():  # the whole __getitem__: safe load, checks, frame selection, parts, tensors
            dataset[0]

        for function in (bare_load, load_and_normalise):  # warm up caches and lazy imports
            median_seconds(function, 10)
        bare = median_seconds(bare_load, args.repeats)
        ours = median_seconds(load_and_normalise, args.repeats)
    ratio = ours / bare
    print(f"bare pickle.load of a {args.frames}-frame pose file: {bare * 1e3:.3f} ms (median of {args.repeats})")
    print(f"load + normalise (PoseDataset.__getitem__, max_length 256): {ours * 1e3:.3f} ms")
    print(json.dumps({"bare_ms": round(bare * 1e3, 4), "load_normalise_ms": round(ours * 1e3, 4),
                      "ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main(sys.argv[1:])

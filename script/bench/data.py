"""Data loading speed, in two parts.

    python script/benchmark.py data [--frames 300] [--repeats 200] [--workers 0 2 4] [--batches 40] [--no_loader]

1. Pose reading: load + normalise one 300-frame pose file (PoseDataset.__getitem__: the restricted
   unpickler, checks, frame selection, parts) vs a bare pickle.load of the same file, both in this
   process on a realistic file (RTMPose layout: lists of per-frame (1, 133, 2) and (1, 133) float32
   arrays). Target: <= 2x. The same for `.pose` files (pose-format): our read (pose-format's reader, the
   layout mapped onto COCO-WholeBody) + normalise against a bare `pose_format.Pose.read` of the same bytes,
   timed interleaved (one of each per repeat), for a reduced-Holistic file (the real recording in
   tests/data/real_poses, its frames repeated to --frames) and a COCO-WholeBody one. Target: <= 2x.
2. Does the loader keep up? One rank's DataLoader alone on the demo's training set (batch 8, shuffled,
   collated and tokenised) in batches/s for each --workers count, after its first batch, against the
   model's training steps/s (forward, backward, AdamW step; demo model, token-mode Geo-Sign, no
   DeepSpeed) on batches already in memory. A loader slower than the model leaves the accelerator
   waiting. The demo is config.py's (`python script/make_demo.py`), else one built in a temporary folder.

The last line is a JSON object: "ratio" (part 1), "pose_file" (part 1, .pose: per layout), "train_steps_per_s", "loader_batches_per_s" per worker count.
"""
import argparse
import itertools
import json
import os
import pickle
import tempfile
import time

import numpy as np

import config
import datasets


def write_realistic_pose(path, num_frames, seed=0):
    """A signer-like pose file: body points near the centre, hands and face around them, a few low scores."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.7, (133, 2))
    keypoints = [(base + rng.normal(0, 0.01, (133, 2)))[None].astype(np.float32) for _ in range(num_frames)]
    scores = [rng.uniform(0.1, 1.0, (1, 133)).astype(np.float32) for _ in range(num_frames)]
    with open(path, "wb") as f:
        pickle.dump({"keypoints": keypoints, "scores": scores}, f, protocol=4)


def one_sample_index(path):
    """A SampleIndex holding one sample, the pose file at path."""
    from sample_index import SampleIndex, StringTableBuilder
    tables = []
    for column in ([os.path.basename(path)], [""]):
        builder = StringTableBuilder()
        builder.add(column)
        tables.append(builder.build())
    return SampleIndex(*tables, pose_dir=os.path.dirname(path))


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


REAL_POSE = os.path.join(config.ROOT, "tests", "data", "real_poses", "mediapipe.pose")


def write_pose_files(folder, num_frames):
    """{layout: path} of two `.pose` files of num_frames frames: the real reduced-Holistic recording's frames
    repeated, and a COCO-WholeBody one written by pose_files from a realistic pickle's arrays."""
    import numpy.ma as ma
    from pose_format import Pose
    import pose_files
    with open(REAL_POSE, "rb") as f:
        real = Pose.read(f.read())
    take = np.arange(num_frames) % real.body.data.shape[0]
    real.body.data, real.body.confidence = ma.masked_array(real.body.data[take]), real.body.confidence[take]
    paths = {"mediapipe_holistic_reduced": os.path.join(folder, "holistic.pose"),
             "coco_wholebody_133": os.path.join(folder, "coco.pose")}
    with open(paths["mediapipe_holistic_reduced"], "wb") as f:
        real.write(f)
    pickle_path = os.path.join(folder, "coco.pkl")
    write_realistic_pose(pickle_path, num_frames)
    with open(pickle_path, "rb") as f:
        pose = pickle.load(f)
    pose_files.write_pose_file({"keypoints": np.stack(pose["keypoints"]), "scores": np.stack(pose["scores"]),
                                "w_h": (1280, 720), "fps": 25.0}, paths["coco_wholebody_133"])
    return paths


def pose_file_ratio(num_frames, repeats):
    """Per layout: bare pose_format.Pose.read of a .pose file and our read + normalise (PoseDataset.__getitem__),
    median ms of `repeats` interleaved pairs, and their ratio."""
    from pose_format import Pose
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        for layout, path in write_pose_files(folder, num_frames).items():
            dataset = datasets.PoseDataset("CSL_Daily", "test", [], max_length=256)
            dataset.samples = one_sample_index(path)

            def bare_read():
                with open(path, "rb") as f:
                    Pose.read(f.read())
            times = {bare_read: [], dataset.__getitem__: []}
            for _ in range(10):  # warm up
                bare_read(), dataset[0]
            for _ in range(repeats):
                for function, argument in ((bare_read, ()), (dataset.__getitem__, (0,))):
                    start = time.perf_counter()
                    function(*argument)
                    times[function].append(time.perf_counter() - start)
            bare, ours = (float(np.median(t)) for t in times.values())
            print(f".pose {layout}, {num_frames} frames: Pose.read {bare * 1e3:.3f} ms, read + normalise "
                  f"{ours * 1e3:.3f} ms, ratio {ours / bare:.2f}")
            result[layout] = {"pose_read_ms": round(bare * 1e3, 4), "load_normalise_ms": round(ours * 1e3, 4),
                              "ratio": round(ours / bare, 3)}
    return result


def demo_paths(demo_root, folder):
    """The demo's paths: under demo_root, else config.py's when built, else a new one in folder."""
    import make_demo
    if demo_root is None and os.path.isfile(config.train_label_paths["Demo"]) and \
            os.path.isfile(os.path.join(config.demo_mt5_path, "config.json")):
        return {"mt5_path": config.demo_mt5_path, "pose_dir": config.pose_dirs["Demo"],
                "label_paths": {"train": config.train_label_paths["Demo"]}}
    if demo_root is not None and os.path.isdir(os.path.join(demo_root, "data", "demo")):
        return {"mt5_path": os.path.join(demo_root, "pretrained_weight", "mt5-demo"),
                "pose_dir": os.path.join(demo_root, "data", "demo", "pose_format"),
                "label_paths": {"train": os.path.join(demo_root, "data", "demo", "labels.train")}}
    print(f"building the demo data and mT5 in {folder} (python script/make_demo.py keeps one)")
    return make_demo.build_demo(folder, seed=0)


def demo_model_args(mt5_path, batch_size):
    """fine_tuning.py's settings for the demo run (script/demo.sh's flags)."""
    import fine_tuning
    return fine_tuning.get_args_parser().parse_args(
        ["--dataset", "Demo", "--mt5_path", mt5_path, "--use_hyperbolic", "--hyp_text_cmp", "token",
         "--hyp_text_emb_src", "decoder", "--batch_size", str(batch_size), "--lr", "1e-3", "--num_workers", "0"])


def loader_batches_per_s(dataset, collator, batch_size, num_workers, batches):
    """Batches/s of a shuffled DataLoader over `batches` batches after its first (worker start-up excluded)."""
    import torch
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collator,
                                         num_workers=num_workers, drop_last=True, persistent_workers=num_workers > 0)

    def epochs():  # as many epochs as it takes (each loads and collates its batches afresh)
        while True:
            yield from loader

    stream = epochs()
    next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches / (time.perf_counter() - start)


def train_steps_per_s(model, batches, steps):
    """Optimizer steps/s of the model (forward, backward, AdamW) on batches already collated, after a warm-up."""
    import torch
    from losses import training_loss
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        training_loss(model, batch)["loss"].backward()
        optimizer.step()

    step(batches[0])
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return steps / (time.perf_counter() - start)


def loader_vs_model(args):
    """Part 2: {"train_steps_per_s", "loader_batches_per_s": {workers: batches/s}}, printed side by side."""
    import torch
    import models
    with tempfile.TemporaryDirectory() as folder:
        demo = demo_paths(args.demo_root, folder)
        model_args = demo_model_args(demo["mt5_path"], args.batch_size)
        torch.manual_seed(0)
        model = models.Uni_Sign(model_args)
        model.set_total_updates(1000)
        dataset = datasets.build_dataset("Demo", "train", model_args, label_path=demo["label_paths"]["train"],
                                         pose_dir=demo["pose_dir"])
        collator = datasets.PoseCollator(model.mt5_tokenizer, "Demo")
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collator)
        steps_per_s = train_steps_per_s(model, list(itertools.islice(loader, 3)), args.train_steps)
        loader_speed = {}
        for workers in args.workers:  # model first, then the loaders: neither runs while the other is timed
            loader_speed[workers] = loader_batches_per_s(dataset, collator, args.batch_size, workers, args.batches)
    print(f"model: {steps_per_s:.2f} training steps/s (demo model, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {args.train_steps} steps)")
    for workers, speed in loader_speed.items():
        verdict = "keeps up" if speed >= steps_per_s else "the model waits for it"
        print(f"loader, --num_workers {workers}: {speed:.2f} batches/s = {speed / steps_per_s:.1f}x the model's "
              f"steps/s ({verdict})")
    return {"train_steps_per_s": round(steps_per_s, 3),
            "loader_batches_per_s": {str(w): round(v, 3) for w, v in loader_speed.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4], help="DataLoader worker counts")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per worker count")
    parser.add_argument("--train_steps", type=int, default=5, help="training steps timed")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--demo_root", default=None, help="a folder make_demo.build_demo built (default: config.py's)")
    parser.add_argument("--no_loader", action="store_true", help="only part 1, the pose read")
    args = parser.parse_args(argv)
    dataset = datasets.PoseDataset("CSL_Daily", "test", [], max_length=256)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "sample.pkl")
        write_realistic_pose(path, args.frames)
        dataset.samples = one_sample_index(path)  # as build_dataset stores samples

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
    result = {"bare_ms": round(bare * 1e3, 4), "load_normalise_ms": round(ours * 1e3, 4), "ratio": round(ratio, 3),
              "pose_file": pose_file_ratio(args.frames, args.repeats)}
    if not args.no_loader:
        result.update(loader_vs_model(args))
    print(json.dumps(result))


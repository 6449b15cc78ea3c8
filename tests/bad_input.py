"""Helpers of the tests of bad input and set-up mistakes (test_errors_before_training.py and
test_errors_while_training.py): a cut demo with pose files of its own that a test may break, and fine_tuning.py
runs on it."""
import gzip
import os
import pickle
import shutil
import sys

from e2e import base_args, run


def make_demo(demo_root, folder, sizes=(4, 4, 4)):
    """The demo cut to `sizes` samples per split (train, dev, test), with a pose folder of its own that a test
    may break files in; the dict base_args takes."""
    pose_dir = folder / "poses"
    pose_dir.mkdir(parents=True)
    paths = {}
    for phase, size in zip(("train", "dev", "test"), sizes):
        with gzip.open(demo_root["label_paths"][phase], "rb") as f:
            labels = dict(list(pickle.load(f).items())[:size])
        paths[phase] = str(folder / f"labels.{phase}")
        with gzip.open(paths[phase], "wb") as f:
            pickle.dump(labels, f)
        for label in labels.values():
            name = label["video_path"].replace(".mp4", ".pkl")
            shutil.copyfile(os.path.join(demo_root["pose_dir"], name), pose_dir / name)
    return {"mt5_path": demo_root["mt5_path"], "pose_dir": str(pose_dir), "label_paths": paths}


def pose_file(demo, phase, index):
    with gzip.open(demo["label_paths"][phase], "rb") as f:
        label = list(pickle.load(f).values())[index]
    return os.path.join(demo["pose_dir"], label["video_path"].replace(".mp4", ".pkl"))


def truncate(path):
    with open(path, "rb") as f:
        head = f.read(200)
    with open(path, "wb") as f:
        f.write(head)


def fine_tune(demo, output_dir, *extra, epochs=1, steps=1, fresh=False):
    return run([sys.executable, "fine_tuning.py", *base_args(demo, output_dir, epochs=epochs, steps=steps), *extra],
               fresh=fresh)


def trained_nothing(output_dir):
    return not any(os.path.exists(os.path.join(output_dir, name)) for name in ("log.txt", "checkpoint.pth"))

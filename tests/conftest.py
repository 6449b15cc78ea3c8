"""Shared fixtures: the demo (tiny mT5, tokenizer, CSL-Daily-format data) built once per test session."""
import gzip
import os
import pickle
import sys

import pytest

from e2e import THREADS, TINY_EVAL_SAMPLES

os.environ["OMP_NUM_THREADS"] = str(THREADS)  # this process's own torch (in-process tests), set before its import

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for folder in (ROOT, os.path.join(ROOT, "script")):
    if folder not in sys.path:
        sys.path.insert(0, folder)
import utils  # noqa: E402  (from ROOT, put on the path just above)
# DeepSpeed compiles its CPU communication op (a minute or two) on first use; every run the tests start (some
# under another HOME) uses this environment's one cache, which script/setup.sh has filled.
utils.use_environment_extension_cache()


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """Build the whole demo into a temporary folder; returns its paths (mt5_path, label_paths, pose_dir, ...)."""
    import make_demo
    out_root = str(tmp_path_factory.mktemp("demo"))
    paths = make_demo.build_demo(out_root, seed=0)
    paths["out_root"] = out_root
    return paths


@pytest.fixture(scope="session")
def tiny_mt5_path(demo_root):
    """Folder of the demo's tiny mT5 and its tokenizer (from_pretrained works for both)."""
    return demo_root["mt5_path"]


def cut_demo(demo_root, folder, size, keep=None):
    """The demo with its dev and test label files cut to their first `size` samples (train, poses, mT5 shared);
    with `keep` (a test on a label), every split keeps only the samples it passes, train included."""
    paths = {"train": demo_root["label_paths"]["train"]}
    for phase in ("train", "dev", "test") if keep else ("dev", "test"):
        with gzip.open(demo_root["label_paths"][phase], "rb") as f:
            labels = [(name, label) for name, label in pickle.load(f).items() if keep is None or keep(label)]
        paths[phase] = str(folder / f"labels.{phase}")
        with gzip.open(paths[phase], "wb") as f:
            pickle.dump(dict(labels if phase == "train" else labels[:size]), f)
    return {"mt5_path": demo_root["mt5_path"], "pose_dir": demo_root["pose_dir"], "label_paths": paths}


@pytest.fixture(scope="session")
def small_demo(demo_root, tmp_path_factory):
    """The demo with dev and test cut to 12 samples each, so that every epoch's beam search is quick."""
    return cut_demo(demo_root, tmp_path_factory.mktemp("small_demo"), 12)


@pytest.fixture(scope="session")
def tiny_demo(demo_root, tmp_path_factory):
    """The demo with dev and test cut to 6 samples each, for runs whose scores are not the point: with
    --batch_size 4 that is two evaluation batches of unequal size (one per rank in a 2-process run)."""
    return cut_demo(demo_root, tmp_path_factory.mktemp("tiny_demo"), TINY_EVAL_SAMPLES)


@pytest.fixture(scope="session")
def micro_demo(demo_root, tmp_path_factory):
    """The demo with dev and test cut to 2 samples each, for runs that check that a set-up trains, evaluates and
    saves (with --batch_size 2: one evaluation batch a split). bf16 on CPUs without bf16 instructions (AVX2 only)
    runs at about a sample a second, so each sample counts (and those runs read 4 frames a video: --max_length 4)."""
    return cut_demo(demo_root, tmp_path_factory.mktemp("micro_demo"), 2)


@pytest.fixture(scope="session")
def deepspeed_run(micro_demo, tmp_path_factory):
    """deepspeed_run(dtype, zero_stage, hyperbolic, task): the output folder of a finished 1-epoch run of 2
    micro-batches of 2 samples with gradient accumulation 2 (one optimizer update) on micro_demo, trained on
    first use and shared by the tests that read it (test_training checks what it logged and saved,
    test_model_io exports its deepspeed/ folder). Those tests only read the folder."""
    from e2e import base_args, check_ok, run
    runs = {}

    def get(dtype, zero_stage, hyperbolic, task):
        key = (dtype, zero_stage, hyperbolic, task)
        if key not in runs:
            out = tmp_path_factory.mktemp(f"run_{dtype}_zero{zero_stage}_{task}")
            args = base_args(micro_demo, out, epochs=1, steps=2) + [
                "--dtype", dtype, "--zero_stage", str(zero_stage), "--gradient_accumulation_steps", "2",
                "--task", task, "--batch_size", "2", "--max_length", "4"]
            if not hyperbolic:
                args.remove("--use_hyperbolic")
            check_ok(run([sys.executable, "fine_tuning.py", *args]))
            runs[key] = out
        return runs[key]
    return get


def pytest_collection_modifyitems(items):
    """The tests marked slow first (a minute or two each): with several pytest-xdist workers, the longest ones
    then start at once instead of one worker finishing them alone while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

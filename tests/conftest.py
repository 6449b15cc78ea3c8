"""Shared fixtures: the demo (tiny mT5, tokenizer, CSL-Daily-format data) and the training runs several test
files read, each built once per test session (once in all, with several pytest-xdist workers)."""
import gzip
import inspect
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from e2e import THREADS, TINY_EVAL_SAMPLES

os.environ["OMP_NUM_THREADS"] = str(THREADS)  # this process's own torch (in-process tests), set before its import

import utils  # noqa: E402  (after OMP_NUM_THREADS: it imports torch)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# DeepSpeed compiles its CPU communication op (a minute or two) on first use; every run the tests start (some
# under another HOME) uses this environment's one cache, which script/setup.sh has filled.
utils.use_environment_extension_cache()
# as training runs them (utils.set_seed): the bit-for-bit comparisons with geoopt hold whatever ran before
utils.run_torchscript_unoptimised()


def built_once(tmp_path_factory, name, build):
    """build(folder) for a new folder `name`, once per test session: with pytest-xdist, the first worker to ask
    builds it under a file lock in the session's temporary folder, which all workers share, and the others wait
    for it. Returns what build returned (kept as JSON beside the folder). What is built there is only read."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder; each worker's own is below it
    folder, result = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not result.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build left, if any
            folder.mkdir()
            result.write_text(json.dumps(build(folder)), encoding="utf-8")
        return json.loads(result.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """Build the whole demo into a temporary folder; returns its paths (mt5_path, label_paths, pose_dir, ...)."""
    import make_demo

    def build(folder):
        return {**make_demo.build_demo(str(folder), seed=0), "out_root": str(folder)}
    return built_once(tmp_path_factory, "demo", build)


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
def isolated_sign_demo(micro_demo, tmp_path_factory):
    """micro_demo with each label's text its first gloss: isolated-sign labels, which --task ISLR requires (the
    videos still sign whole sentences: for runs that check that the task trains and scores, not how well)."""
    folder, paths = tmp_path_factory.mktemp("isolated_sign_demo"), {}
    for phase, path in micro_demo["label_paths"].items():
        with gzip.open(path, "rb") as f:
            labels = pickle.load(f)
        paths[phase] = str(folder / f"labels.{phase}")
        with gzip.open(paths[phase], "wb") as f:
            pickle.dump({name: {**label, "text": label["gloss"][0], "gloss": label["gloss"][:1]}
                         for name, label in labels.items()}, f)
    return {**micro_demo, "label_paths": paths}


@pytest.fixture(scope="session")
def deepspeed_run(micro_demo, isolated_sign_demo, tmp_path_factory):
    """deepspeed_run(dtype, zero_stage, hyperbolic, task): the output folder of a finished 1-epoch run of 2
    micro-batches of 2 samples with gradient accumulation 2 (one optimizer update) on micro_demo, trained on
    first use and shared by the tests that read it (test_training checks what it logged and saved,
    test_model_io exports its deepspeed/ folder). Those tests only read the folder."""
    from e2e import base_args, check_ok, run

    def get(dtype, zero_stage, hyperbolic, task):
        def train(out):
            demo = isolated_sign_demo if task == "ISLR" else micro_demo
            args = base_args(demo, out, epochs=1, steps=2) + [
                "--dtype", dtype, "--zero_stage", str(zero_stage), "--gradient_accumulation_steps", "2",
                "--task", task, "--batch_size", "2", "--max_length", "4"]
            if not hyperbolic:
                args.remove("--use_hyperbolic")
            check_ok(run([sys.executable, "fine_tuning.py", *args]))
            return str(out)
        name = f"run_{dtype}_zero{zero_stage}_{'hyp' if hyperbolic else 'pose'}_{task}"
        return Path(built_once(tmp_path_factory, name, train))
    return get


@pytest.fixture(scope="session")
def token_run(tiny_demo, tmp_path_factory):
    """The output folder of a finished run of two epochs of two steps of token-mode Geo-Sign (ZeRO-2, fp32) on
    tiny_demo, logging to wandb without credentials (a HOME without .netrc): checkpoint.pth, best_checkpoint.pth,
    log.txt, deepspeed/, wandb's offline run, and what the run printed in stdout.txt. test_training checks what
    it logged and saved; test_model_io exports, loads and fine-tunes from it. Those tests only read it."""
    from e2e import base_args, check_ok, run

    def train(folder):
        out, home = folder / "run", folder / "home"
        home.mkdir()
        result = check_ok(run([sys.executable, "fine_tuning.py", *base_args(tiny_demo, out, epochs=2, steps=2),
                               "--wandb"], HOME=str(home), WANDB_MODE=None, WANDB_SILENT="true"))
        (out / "stdout.txt").write_text(result.stdout, encoding="utf-8")
        return str(out)
    return Path(built_once(tmp_path_factory, "token_run", train))


# Fixtures that train a model, and what a test's own code calls to start a process or train: a test using either is
# marked e2e, so that `-m "not slow and not e2e"` is the quick unit tier of the edit-test loop.
TRAINING_FIXTURES = {"token_run", "deepspeed_run", "exported", "short_sentence_demo"}
E2E_CALLS = ("sys.executable", "subprocess.", "fine_tuning.run(", "fine_tuning.main(", "ablate_hyperbolic.main(",
             "A.main(", "check_ok(", "Engine(", "train_one_epoch(")


def calls_a_process_or_training(function):
    """True when the source of `function` holds one of E2E_CALLS."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    return any(call in source for call in E2E_CALLS)


def starts_processes_or_trains(item):
    """A test that uses a training fixture, calls one of E2E_CALLS itself, or calls a function of its module's
    namespace (its own helpers, or those it imports, such as e2e.run) that does."""
    if TRAINING_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    function = getattr(item, "function", None)
    if function is None:
        return False
    if calls_a_process_or_training(function):
        return True
    helpers = (function.__globals__.get(name) for name in function.__code__.co_names)
    return any(inspect.isfunction(helper) and calls_a_process_or_training(helper) for helper in helpers)


def pytest_collection_modifyitems(items):
    """Mark the tests that start processes or train `e2e`; then the tests marked slow first (a minute or two each):
    with several pytest-xdist workers, the longest ones then start at once instead of one worker finishing them
    alone while the other idles."""
    for item in items:
        if starts_processes_or_trains(item):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

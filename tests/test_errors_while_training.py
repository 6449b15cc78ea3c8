"""fine_tuning.py meeting errors while a job runs: a bad pose file read by a worker, an epoch with no
readable sample, running out of accelerator memory or disk, each one line with exit code 1 and nothing
half-written; several processes with --skip_bad_samples or ZeRO-3 evaluation finish and score like one.
(Flags and files checked before training: test_errors_before_training.py.)"""
import errno
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import datasets
from bad_input import fine_tune, make_demo, pose_file, trained_nothing, truncate
from e2e import ROOT, base_args, check_ok, clean_env, free_port, read_log, read_predictions, run
from in_process import fine_tuning_refuses


def write_zero_length_keypoints(path):
    """A pose file whose `keypoints` is one zero-length array (an RTMPose run that found no frame)."""
    with open(path, "wb") as f:
        pickle.dump({"keypoints": np.zeros((0, 1, 133, 2), np.float32), "scores": np.zeros((0, 1, 133), np.float32)}, f)


def refused(result, *needles):
    """Exit code 1, no traceback, exactly one `error:` line, holding every needle; returns that line."""
    assert result.returncode == 1, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-2000:]}\nSTDERR:\n{result.stderr[-3000:]}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture
def demo(demo_root, tmp_path):
    return make_demo(demo_root, tmp_path / "demo")


# ---------------------------------------------------------------------------- bad files met while training

def test_zero_length_keypoints_is_a_bad_sample_naming_the_file(tmp_path):
    path = tmp_path / "empty.pkl"
    write_zero_length_keypoints(path)
    with pytest.raises(datasets.BadSampleError, match="empty.pkl: no frames"):
        datasets.load_pose(str(path))


def test_bad_pose_file_read_by_a_worker_is_one_line_naming_it(demo, tmp_path):
    """Read by a DataLoader worker, the error comes back wrapped in the worker's traceback; the user sees one line."""
    bad = pose_file(demo, "train", 1)
    write_zero_length_keypoints(bad)
    line = refused(fine_tune(demo, tmp_path / "out", "--num_workers", "2"), bad, "no frames", "--skip_bad_samples")
    assert "DataLoader worker" not in line


def test_an_epoch_that_trains_on_no_sample_stops_without_saving(capsys, demo_root, tmp_path):
    """With --skip_bad_samples, an epoch (here its one step, --quick_break 1) whose every sample is bad must not
    end in rc 0 with checkpoints of an untrained model. The bad samples are the first batch DistributedSampler
    deals (seed 42, epoch 0); the other half of the split is readable, so the up-front check passes."""
    demo = make_demo(demo_root, tmp_path / "demo", sizes=(8, 4, 4))
    sampler = torch.utils.data.DistributedSampler(range(8), num_replicas=1, rank=0, shuffle=True, seed=42)
    sampler.set_epoch(0)
    for index in list(sampler)[:4]:
        truncate(pose_file(demo, "train", index))
    out = tmp_path / "out"
    line = fine_tuning_refuses(capsys, base_args(demo, out, epochs=1, steps=1) + ["--skip_bad_samples"])[0]
    assert "epoch 0 trained on no sample" in line and "4 samples" in line  # the whole command line, in this process
    assert trained_nothing(out)


def test_out_of_accelerator_memory_is_one_line_with_the_flags_that_help(capsys, demo, tmp_path, monkeypatch):
    import models

    def out_of_memory(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore of the allocator's text")
    monkeypatch.setattr(models.Uni_Sign, "forward", out_of_memory)
    line = fine_tuning_refuses(capsys, base_args(demo, tmp_path / "out", epochs=1, steps=1))[0]
    assert "out of accelerator memory (CUDA out of memory. Tried to allocate 2.00 GiB)" in line
    assert "--batch_size" in line and "--gradient_accumulation_steps" in line and "--resume" not in line


def test_a_full_disk_while_writing_predictions_is_one_line_naming_the_file(capsys, demo, tmp_path, monkeypatch):
    import utils

    def disk_full(output_dir, split, *rest):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(output_dir, f"{split}_tmp_pres.txt"))
    monkeypatch.setattr(utils, "write_predictions", disk_full)
    line = fine_tuning_refuses(capsys, base_args(demo, tmp_path / "out", epochs=1, steps=1))[0]
    assert line == f"error: could not write {tmp_path / 'out' / 'dev_tmp_pres.txt'}: the disk is full; free some space"


def test_a_log_line_that_cannot_be_written_leaves_the_log_whole(tmp_path, monkeypatch):
    import utils
    utils.append_log(tmp_path, {"epoch": 0})

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        utils.append_log(tmp_path, {"epoch": 1, "text": "x" * 10_000})
    assert (tmp_path / "log.txt").read_text() == '{"epoch": 0}\n' and os.listdir(tmp_path) == ["log.txt"]


# ---------------------------------------------------------------------------- several processes

def launch_two(args, timeout=600):
    """fine_tuning.py as two ranks on one node, started by DeepSpeed's launcher as on a machine of two GPUs
    (`deepspeed --num_gpus 2`; on CPU: gloo, a core each). On a timeout (a hang) the launcher and both ranks are
    killed. The launcher on several nodes is test_multinode.py's."""
    launcher = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(free_port()), "fine_tuning.py", *args]
    process = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(threads=1), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"two processes still running after {timeout} s (a hang)")
    return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_two_processes_skip_together_and_zero3_evaluation_scores_like_one(demo_root, tmp_path):
    """Batch size 1 and one bad training sample: one rank's batch is empty, so both ranks must skip that step.
    ZeRO-3 evaluation of 3 dev samples with one bad: the ranks have 2 and 1 batches, one of them empty, and beam
    searches of different lengths; every rank must run the same generate calls. Then one process scores the
    checkpoint exactly as the two did. The two are started by DeepSpeed's launcher, as train.sh starts them."""
    demo = make_demo(demo_root, tmp_path / "demo", sizes=(4, 3, 3))
    truncate(pose_file(demo, "train", 0))
    truncate(pose_file(demo, "dev", 1))
    two = tmp_path / "two"
    args = base_args(demo, two, epochs=1, steps=0) + ["--batch_size", "1", "--zero_stage", "3", "--skip_bad_samples"]
    args.remove("--use_hyperbolic")  # ZeRO-3 trains without the hyperbolic branch
    check_ok(launch_two(args))
    record = read_log(two)[0]
    assert record["train_skipped_samples"] == 1 and record["train_skipped_steps"] == 1
    assert record["dev_skipped_samples"] == 1 and record["test_skipped_samples"] == 0
    assert len(read_predictions(two / "dev_tmp_pres.txt")) == 2
    one = tmp_path / "one"
    eval_args = base_args(demo, one) + ["--batch_size", "1", "--skip_bad_samples", "--eval", "--finetune",
                                        str(two / "checkpoint.pth")]
    eval_args.remove("--use_hyperbolic")
    result = check_ok(run([sys.executable, "fine_tuning.py", *eval_args]))
    for split in ("dev", "test"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{split}:"))
        assert f"bleu4 {record[f'{split}_bleu4']:.2f}" in line and f"rouge {record[f'{split}_rouge']:.2f}" in line
        assert read_predictions(two / f"{split}_tmp_pres.txt") == read_predictions(one / f"{split}_tmp_pres.txt")


def test_runs_under_another_home_share_the_compiled_op_cache(tmp_path):
    env = clean_env(HOME=str(tmp_path))
    assert env["TORCH_EXTENSIONS_DIR"] == os.environ["TORCH_EXTENSIONS_DIR"]
    assert not env["TORCH_EXTENSIONS_DIR"].startswith(str(tmp_path))

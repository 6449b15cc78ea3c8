"""fine_tuning.py on bad input and set-up mistakes (issue 12): each stops with exit code 1 and one `error:` line
that names the file or flag, before any training where it can be checked up front; an earlier run is never
overwritten by accident; skipped samples are counted; several processes with --skip_bad_samples or ZeRO-3
evaluation finish and score like one."""
import errno
import gzip
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import datasets
import fine_tuning
import model_io
import preflight
from e2e import ROOT, base_args, check_ok, clean_env, free_port, read_log, read_predictions, run
from in_process import fine_tuning_refuses


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


def fine_tune(demo, output_dir, *extra, epochs=1, steps=1, fresh=False):
    return run([sys.executable, "fine_tuning.py", *base_args(demo, output_dir, epochs=epochs, steps=steps), *extra],
               fresh=fresh)


def trained_nothing(output_dir):
    return not any(os.path.exists(os.path.join(output_dir, name)) for name in ("log.txt", "checkpoint.pth"))


def preflight_refuses(capsys, demo, output_dir, *extra):
    """preflight.check_flags, then preflight.preflight (what main() runs before building the model) on these
    flags, in this process: they must stop with exit code 1 and exactly one `error:` line, which is returned."""
    args = fine_tuning.get_args_parser().parse_args(base_args(demo, output_dir, epochs=1, steps=1) + list(extra))
    with pytest.raises(SystemExit) as stop:
        preflight.check_flags(args)
        preflight.preflight(args, fine_tuning.load_splits(args))
    assert stop.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.fixture
def demo(demo_root, tmp_path):
    return make_demo(demo_root, tmp_path / "demo")


# ---------------------------------------------------------------------------- flags checked before training

@pytest.mark.parametrize("flags, needle", [
    (["--epochs", "0"], "--epochs"),
    (["--batch_size", "0"], "--batch_size"),
    (["--gradient_accumulation_steps", "4", "--quick_break", "2"], "no optimizer update"),
    (["--resume", "--overwrite"], "--overwrite"),
    (["--eval", "--resume"], "--eval --finetune OUTPUT_DIR/best_checkpoint.pth"),  # scored an untrained model
    # each of these was a traceback from torch, DeepSpeed or transformers, --num_beams 0 and --max_tgt_len 0
    # only after an epoch of training; --alpha 2, --warmup-epochs -1 and --min-lr above --lr trained silently
    (["--num_beams", "0"], "--num_beams must be at least 1"),
    (["--max_tgt_len", "0"], "--max_tgt_len must be at least 1"),
    (["--max_length", "0"], "--max_length must be at least 1"),
    (["--num_workers", "-1"], "--num_workers must be 0"),
    (["--quick_break", "-1"], "--quick_break must be 0"),
    (["--lr", "nan"], "--lr must be a number of at least 0 (got nan)"),
    (["--lr", "-1"], "--lr must be"),
    (["--hyp_lr", "inf"], "--hyp_lr must be"),
    (["--min-lr", "1"], "--min-lr 1.0 is above --lr"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be"),
    (["--weight-decay", "-0.1"], "--weight-decay must be"),
    (["--gradient_clipping", "-1"], "--gradient_clipping must be"),
    (["--opt-betas", "1", "0.999"], "--opt-betas must be two numbers in [0, 1)"),
    (["--seed", str(2**32)], "--seed must be between 0 and 2**32 - 1"),  # overflowed the epoch's seed: a traceback
    (["--hyp_dim", "0"], "--hyp_dim must be at least 1"),
    (["--init_c", "0"], "--init_c must be a number above 0"),
    (["--alpha", "2"], "--alpha must be between 0 and 1"),
    (["--label_smoothing", "1.5"], "--label_smoothing must be between 0 and 1"),
    (["--label_smoothing_hyp", "-0.1"], "--label_smoothing_hyp must be between 0 and 1"),
    # mT5 overflows in fp16: transformers keeps `wo` (its _keep_in_fp32_modules) in fp32, DeepSpeed casts it anyway
    (["--dtype", "fp16"], "--dtype fp16: mT5 overflows in float16 (transformers keeps its 'wo' layers in float32"),
])
def test_impossible_numbers_are_refused_before_training(capsys, demo, tmp_path, flags, needle):
    assert needle in preflight_refuses(capsys, demo, tmp_path / "out", *flags)


def test_every_number_flag_has_a_range_and_the_defaults_are_in_it():
    """A new number flag of fine_tuning.py / pretraining.py gets a rule in preflight.py, or a reason here."""
    import pretraining
    unchecked = {"local_rank", "zero_stage", "opt_betas"}  # the launcher's; choices; checked apart
    ruled = {name for _, name, _, _ in preflight.FLAG_RULES + preflight.TRAINING_FLAG_RULES}
    for parser in (fine_tuning.get_args_parser(), pretraining.get_args_parser()):
        numbers = {a.dest for a in parser._actions if a.type in (int, float)}
        assert numbers - unchecked == ruled, numbers ^ ruled
        preflight.check_flags(parser.parse_args([]))  # the defaults pass (no SystemExit)


def test_a_bad_flag_stops_the_command_before_anything_is_read_or_made(capsys, tmp_path):
    """fine_tuning.run checks the flags first: no label, model or folder is touched (none of these exist)."""
    missing = {"mt5_path": tmp_path / "no_mt5", "pose_dir": tmp_path / "no_poses", "label_paths":
               {phase: str(tmp_path / f"no_labels.{phase}") for phase in ("train", "dev", "test")}}
    line = fine_tuning_refuses(capsys, base_args(missing, tmp_path / "out") + ["--max_tgt_len", "0"])[0]
    assert "--max_tgt_len must be at least 1" in line and not os.path.exists(tmp_path / "out")


def test_epoch_seeds_keep_their_values_and_never_overflow():
    from types import SimpleNamespace
    loader = SimpleNamespace(sampler=SimpleNamespace(set_epoch=lambda epoch: None), generator=torch.Generator())
    fine_tuning.set_epoch(loader, 7, 42)
    assert loader.generator.initial_seed() == (42 * 1_000_003 + 7) * 65_537  # rank 0: the seed runs have used
    fine_tuning.set_epoch(loader, 99, 2**32 - 1)  # the largest --seed: was "Overflow when unpacking long long"
    assert 0 <= loader.generator.initial_seed() < 2**63


def test_evaluation_ignores_the_training_flags(capsys):
    """--eval reads no training flag, so a training-only value it cannot use is not refused; generation's are."""
    parser = fine_tuning.get_args_parser()
    preflight.check_flags(parser.parse_args(["--eval", "--epochs", "0", "--lr", "-1", "--min-lr", "1"]))
    with pytest.raises(SystemExit):
        preflight.check_flags(parser.parse_args(["--eval", "--num_beams", "0"]))
    assert "--num_beams must be at least 1" in capsys.readouterr().err


def test_output_dir_that_is_a_file_or_under_a_file_is_refused(capsys, demo, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    assert f"--output_dir {a_file} is a file" in preflight_refuses(capsys, demo, a_file)
    assert f"--output_dir {a_file / 'run'} cannot be written" in preflight_refuses(capsys, demo, a_file / "run")
    assert a_file.read_text() == "not a folder"


def test_read_only_output_dir_is_refused(capsys, demo, tmp_path, monkeypatch):
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o500)
    if os.geteuid() == 0:  # root writes into read-only folders (CI runs as root): the OS's refusal is simulated
        real_open = open

        def open_refusing_out(path, *args, **kwargs):
            if str(path).startswith(str(out)):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, *args, **kwargs)
        monkeypatch.setattr("builtins.open", open_refusing_out)
    try:
        line = preflight_refuses(capsys, demo, out)
    finally:
        out.chmod(0o700)
    assert f"--output_dir {out} cannot be written (Permission denied)" in line
    assert os.listdir(out) == []  # no probe file left behind


# ---------------------------------------------------------------------------- an earlier run

def fake_finished_run(folder):
    """The files a finished run leaves (their content does not matter to the check); returns their digests."""
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text('{"epoch": 0, "dev_bleu4": 12.5}\n')
    for name in ("checkpoint.pth", "best_checkpoint.pth"):
        (folder / name).write_bytes(os.urandom(1000))
    (folder / "deepspeed" / "epoch0").mkdir(parents=True)
    (folder / "deepspeed" / "epoch0" / "stale").write_text("the earlier run's optimizer state")
    (folder / "deepspeed" / "latest").write_text("epoch0")
    return digests(folder)


def digests(folder):
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(parent, name), "rb") as f:
                found[os.path.relpath(os.path.join(parent, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def test_rerun_into_a_finished_run_is_refused_and_leaves_it_unchanged(capsys, demo, tmp_path):
    """The whole command line (in this process): main() runs the checks before it writes anything."""
    out = tmp_path / "finished"
    before = fake_finished_run(out)
    line = fine_tuning_refuses(capsys, base_args(demo, out, epochs=1, steps=1))[0]
    assert str(out) in line and "--resume" in line and "--overwrite" in line
    assert digests(out) == before


def test_overwrite_replaces_the_run_and_skipped_eval_samples_are_counted_per_split(demo, tmp_path):
    """--overwrite starts a fresh log; with --skip_bad_samples a missing dev file is announced before training,
    and each split's skipped samples are printed and logged beside its scores. The screen shows no third-party
    notice a user cannot act on."""
    out = tmp_path / "finished"
    fake_finished_run(out)
    os.remove(pose_file(demo, "dev", 1))
    truncate(pose_file(demo, "test", 2))
    result = check_ok(fine_tune(demo, out, "--overwrite", "--skip_bad_samples", fresh=True))  # start-up notices too
    assert "1 of the 4 dev pose files" in result.stdout and pose_file(demo, "dev", 1) in result.stdout
    for split, index in (("dev", 1), ("test", 2)):  # counted, and named: on screen and in a list
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"skipped 1 bad {split} samples"))
        assert "(--skip_bad_samples): scored 3 of 4" in line and pose_file(demo, split, index) in line
        listing = out / f"{split}_skipped_samples.txt"
        assert str(listing) in line and listing.read_text().splitlines() == [pose_file(demo, split, index)]
    log = read_log(out)
    assert [r["epoch"] for r in log] == [0]  # the earlier run's log is gone, not appended to
    assert log[0]["dev_skipped_samples"] == 1 and log[0]["test_skipped_samples"] == 1
    assert log[0]["train_skipped_samples"] == 0
    epoch_line = next(line for line in result.stdout.splitlines() if line.startswith("epoch 0: dev"))
    assert "skipped_samples 1" in epoch_line
    assert len(read_predictions(out / "dev_tmp_pres.txt")) == 3
    assert torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["epoch"] == 0
    screen = result.stdout + result.stderr  # none of the notices a newcomer cannot act on
    for notice in ("Setting accelerator to CPU", "we will NOT tie them", "before it has started", "built successfully"):
        assert notice not in screen, notice
    assert not os.path.exists(out / "deepspeed" / "epoch0" / "stale")  # the earlier resumable state is gone


# ---------------------------------------------------------------------------- data checked before training

def test_missing_dev_pose_file_is_refused_before_training(capsys, demo, tmp_path):
    missing = pose_file(demo, "dev", 2)
    os.remove(missing)
    line = preflight_refuses(capsys, demo, tmp_path / "out")
    assert missing in line and "1 of the 4 dev pose files" in line and "--skip_bad_samples" in line


def test_corrupt_dev_pose_file_is_refused_before_training(capsys, demo, tmp_path):
    """Present but unreadable: found by reading every dev and test file before the first epoch, not after it."""
    corrupt = pose_file(demo, "dev", 1)
    truncate(corrupt)
    line = preflight_refuses(capsys, demo, tmp_path / "out")
    assert corrupt in line and "truncated or corrupt" in line and "--skip_bad_samples" in line


def test_corrupt_test_pose_file_with_skip_bad_samples_is_announced_before_training(capsys, demo, tmp_path):
    truncate(pose_file(demo, "test", 3))
    args = fine_tuning.get_args_parser().parse_args(base_args(demo, tmp_path / "out") + ["--skip_bad_samples"])
    preflight.preflight(args, fine_tuning.load_splits(args))
    assert "1 of the 4 test pose files are unreadable" in capsys.readouterr().out


def test_empty_dev_split_is_refused_before_training(capsys, demo, tmp_path):
    """The whole command line (in this process): the label reader or preflight, whichever meets it first, stops
    with one line naming the file."""
    with gzip.open(demo["label_paths"]["dev"], "wb") as f:
        pickle.dump({}, f)
    out = tmp_path / "out"
    assert demo["label_paths"]["dev"] in fine_tuning_refuses(capsys, base_args(demo, out, epochs=1, steps=1))[0]
    assert trained_nothing(out)


@pytest.mark.parametrize("phase", ["train", "dev"])
def test_skip_bad_samples_with_every_sample_of_a_split_bad_is_refused_before_training(capsys, demo, tmp_path, phase):
    for index in range(4):
        truncate(pose_file(demo, phase, index))
    line = preflight_refuses(capsys, demo, tmp_path / "out", "--skip_bad_samples")
    assert f"every {phase} sample is unreadable" in line and demo["label_paths"][phase] in line


def test_islr_on_sentence_labels_is_refused_naming_the_label_file(capsys, demo, isolated_sign_demo, tmp_path):
    """--task ISLR on sentence labels made every sentence a class and trained silently to top-1 0.00."""
    line = preflight_refuses(capsys, demo, tmp_path / "out", "--task", "ISLR")
    assert line.startswith("error: --task ISLR") and demo["label_paths"]["dev"] in line
    assert "--dev_label_path" in line and "--task SLT" in line
    args = fine_tuning.get_args_parser().parse_args(base_args(isolated_sign_demo, tmp_path / "ok") + ["--task", "ISLR"])
    preflight.preflight(args, fine_tuning.load_splits(args))  # isolated signs pass


@pytest.mark.parametrize("dataset, phase, isolated", [("WLASL", "train", True), ("CSL_Daily", "dev", False),
                                                      ("How2Sign", "test", False), ("OpenASL", "dev", False)])
def test_the_real_label_files_are_told_apart_as_isolated_signs_or_sentences(tmp_path, dataset, phase, isolated):
    os.makedirs(tmp_path / phase)
    split = datasets.build_dataset(dataset, phase, datasets.DataConfig(task="ISLR"), pose_dir=str(tmp_path))
    sentences = sum(map(preflight.looks_like_a_sentence, (split.samples[i]["text"] for i in range(len(split)))))
    assert (sentences == 0) if isolated else (sentences > 0.9 * len(split))


def break_mt5(folder, how):
    """A copy of a working mT5 folder, broken one way."""
    if how == "config.json":
        (folder / "config.json").write_text("{not json")
    elif how == "tokenizer.json":
        (folder / "tokenizer.json").write_text("not a tokenizer")
    elif how == "weights":
        (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    elif how == "no tokenizer":  # transformers then built a 4-token tokenizer that read every word as <unk>
        os.remove(folder / "spiece.model")
        os.remove(folder / "tokenizer.json")
    elif how == "another tokenizer":  # more tokens than the model embeds: an index error at the first step
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 8}))
        (folder / "model.safetensors").unlink()  # random weights of that shape, saved as the folder's own
        from transformers import MT5Config, MT5ForConditionalGeneration
        MT5ForConditionalGeneration(MT5Config.from_pretrained(folder)).save_pretrained(folder)


@pytest.mark.parametrize("how, needle", [
    ("config.json", "cannot be loaded (OSError"), ("tokenizer.json", "cannot be loaded (JSONDecodeError"),
    ("weights", "cannot be loaded (SafetensorError"), ("no tokenizer", "has no tokenizer"),
    ("another tokenizer", "tokens but the model embeds 8")])
def test_a_broken_mt5_folder_is_one_line_naming_it(capsys, demo, tmp_path, how, needle):
    mt5 = tmp_path / "mt5"
    shutil.copytree(demo["mt5_path"], mt5)
    break_mt5(mt5, how)
    line = fine_tuning_refuses(capsys, base_args(demo, tmp_path / "out", epochs=1, steps=1) + ["--mt5_path", mt5])[0]
    assert f"mT5 at {mt5}" in line and needle in line and "hf download google/mt5-base" in line


def test_a_planted_pickle_as_the_mt5_weights_is_one_line_naming_it(capsys, demo, tmp_path):
    """transformers refused it too (weights_only), but as torch's traceback advising weights_only=False, which
    would run the file's code."""
    from safetensors.torch import load_file
    from test_engine import Planted
    mt5, marker = tmp_path / "mt5", tmp_path / "marker"
    shutil.copytree(demo["mt5_path"], mt5)
    genuine = load_file(mt5 / "model.safetensors")
    (mt5 / "model.safetensors").unlink()
    torch.save(genuine, mt5 / "pytorch_model.bin")  # pickled genuine weights pass the check
    model_io.check_mt5_weights(str(mt5))
    torch.save({**genuine, "shared.weight": Planted(str(marker))}, mt5 / "pytorch_model.bin")
    line, out, err = fine_tuning_refuses(capsys, base_args(demo, tmp_path / "out", epochs=1, steps=1)
                                         + ["--mt5_path", mt5])
    assert f"refusing {mt5 / 'pytorch_model.bin'}" in line and "Unsupported global: GLOBAL io.open" in line
    assert "weights_only" not in out + err and not marker.exists()


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

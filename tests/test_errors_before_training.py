"""fine_tuning.py on bad flags and files it can check up front: each stops with exit code 1 and one
`error:` line that names the flag or file, before any training: number flags out of range, an output folder that
cannot be written or holds an earlier run (never overwritten by accident), missing, corrupt or empty splits,
sentence labels under --task ISLR, broken or unsafe mT5 folders. (Errors met while a job runs:
test_errors_while_training.py.)"""
import errno
import gzip
import hashlib
import json
import os
import pickle
import shutil

import pytest
import torch

import datasets
import fine_tuning
from data_config import DataConfig
import model_io
import preflight
from bad_input import fine_tune, make_demo, pose_file, trained_nothing, truncate
from e2e import base_args, check_ok, read_log, read_predictions
from in_process import fine_tuning_refuses


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
    split = datasets.build_dataset(dataset, phase, DataConfig(task="ISLR"), pose_dir=str(tmp_path))
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

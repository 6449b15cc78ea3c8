"""Helpers for end-to-end tests that run fine_tuning.py / pretraining.py as a user does (in a subprocess).

The fixtures they go with, small_demo and tiny_demo, are in conftest.py.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_EVAL_SAMPLES = 6  # dev and test samples of the tiny_demo fixture
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


def base_args(demo, output_dir, epochs=2, steps=4):
    return ["--dataset", "Demo", "--task", "SLT", "--mt5_path", demo["mt5_path"], "--pose_dir", demo["pose_dir"],
            "--train_label_path", demo["label_paths"]["train"], "--dev_label_path", demo["label_paths"]["dev"],
            "--test_label_path", demo["label_paths"]["test"], "--output_dir", str(output_dir),
            "--epochs", str(epochs), "--quick_break", str(steps), "--batch_size", "4", "--lr", "1e-3",
            "--warmup-epochs", "0", "--num_workers", "0", "--num_beams", "2", "--max_tgt_len", "20",
            "--use_hyperbolic", "--hyp_text_cmp", "token", "--hyp_text_emb_src", "decoder"]


def clean_env(threads=2, **extra):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV and not k.startswith("WANDB")}
    env.update({"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", **extra})
    return {k: v for k, v in env.items() if v is not None}


def run(cmd, timeout=600, threads=2, **env):
    return subprocess.run(cmd, cwd=ROOT, env=clean_env(threads, **env), capture_output=True, text=True,
                          timeout=timeout)


def check_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"
    return result


def read_log(output_dir):
    with open(os.path.join(output_dir, "log.txt"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_predictions(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def assert_scores_like_one_process(demo, run_dir, eval_dir):
    """The multi-process run in run_dir (one epoch) logged the dev and test scores, and wrote the prediction
    files, that one plain process evaluating its checkpoint.pth gets: same scores, same lines in the same order."""
    log = read_log(run_dir)
    args = base_args(demo, eval_dir) + ["--eval", "--finetune", str(run_dir / "checkpoint.pth")]
    result = check_ok(run([sys.executable, "fine_tuning.py", *args]))
    for split in ("dev", "test"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{split}:"))
        assert f"bleu4 {log[0][f'{split}_bleu4']:.2f}" in line and f"rouge {log[0][f'{split}_rouge']:.2f}" in line
        gathered = read_predictions(run_dir / f"{split}_tmp_pres.txt")
        assert gathered == read_predictions(eval_dir / f"{split}_tmp_pres.txt")  # same order, none lost or doubled

"""Training-step time of the working tree against a git revision, side by side in separate processes.

    python script/benchmark.py step --baseline 6d4f403 [--rounds 5] [--steps 3] [--batch_size 4] [--frames 64]
    python script/benchmark.py step --baseline HEAD --tiny     # seconds: the suite's smoke run
    python script/benchmark.py step --baseline HEAD --compile  # fine_tuning.py --compile against eager

The revision is checked out in a temporary `git worktree`. Each round runs, for pose-only and for token
mode (Geo-Sign, decoder text), one process per tree, alternating which tree goes first; a process builds
the model, the AdamW + DeepSpeed engine and the Riemannian Adam exactly as fine_tuning.py does, runs one
warm-up step, then times `--steps` steps of fine_tuning.train_one_epoch (forward, backward, both optimizer
updates) on one fixed batch with a small mT5 (d_model 128, 2 + 2 layers). A process reports its ms per
step; the medians over rounds give `ratio` = baseline / working tree (> 1: the working tree is faster).
Neighbouring processes share the machine's load, so the median of the per-round ratios is printed too,
and the ratio of process CPU times (less sensitive to other jobs; set OMP_WAIT_POLICY=PASSIVE on a busy
machine, or threads spinning at barriers while descheduled inflate it).
Last line: JSON {"ratio": the smaller of the two modes' ratios, "pose": {...}, "token": {...}}.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import (ROOT, child_command, git_worktree, side_by_side, side_by_side_parser,
                          single_process_env, training_step)

MODES = ("pose", "token")
TINY = dict(batch_size=2, frames=8, text_len=6, steps=1, rounds=1)


def parse(argv):
    parser = side_by_side_parser(__doc__, 3, "timed steps per process")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--text_len", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one round, one step: a smoke run")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--compile", action="store_true",
                        help="time the working tree with fine_tuning.py --compile (the baseline stays eager); the "
                             "warm-up step, not timed, compiles")
    # internal: one timing process
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code_root", default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--mt5_path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="pose", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    return args


# ----------------------------------------------------------------------------- one timing process
def child(args):
    """Import the model code of `code_root`, set it up as fine_tuning.main does, print ms per step as JSON."""
    import utils  # the code_root's (PYTHONPATH; run_child), as every model module
    utils.init_distributed()
    flags = ["--mt5_path", args.mt5_path, "--batch_size", str(args.batch_size), "--num_workers", "0"]
    _, _, train, batch = training_step(flags + (["--compile"] if args.compile else []), args)
    train([batch], 0)  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    train([batch] * args.steps, 1)
    ms, cpu_ms = (1000 * (end - begin) / args.steps for end, begin in
                  ((time.perf_counter(), start), (time.process_time(), cpu_start)))
    print(json.dumps({"ms_per_step": ms, "cpu_ms_per_step": cpu_ms}), flush=True)


def run_child(args, code_root, mt5_path, mode, compiled=False):
    """(wall ms, process CPU ms) per step of one process on `code_root`'s code."""
    cmd = child_command("step", "--child", "--code_root", code_root, "--mt5_path", mt5_path, "--mode", mode,
                        "--steps", args.steps, "--batch_size", args.batch_size, "--frames", args.frames,
                        "--text_len", args.text_len, *(["--compile"] if compiled else []))
    # the code_root's modules ahead of the installed ones (this checkout's)
    env = single_process_env(OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false", PYTHONPATH=code_root)
    result = subprocess.run(cmd, cwd=code_root, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: the timing process on {code_root} failed (exit {result.returncode}):\n"
                 f"{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return measured["ms_per_step"], measured["cpu_ms_per_step"]


def main(argv=None):
    args = parse(argv)
    if args.child:
        return child(args)
    from make_demo import build_tiny_mt5

    times = {mode: {"baseline": [], "work": []} for mode in args.modes}
    cpu_times = {mode: {"baseline": [], "work": []} for mode in args.modes}
    with tempfile.TemporaryDirectory() as tmp:
        mt5_path = build_tiny_mt5(os.path.join(tmp, "mt5"))
        with git_worktree(args.baseline, os.path.join(tmp, "baseline")) as baseline_root:
            roots = {"baseline": baseline_root, "work": ROOT}
            for round_index in range(args.rounds):
                for mode in args.modes:
                    order = ("baseline", "work") if round_index % 2 == 0 else ("work", "baseline")
                    for tree in order:
                        wall_ms, cpu_ms = run_child(args, roots[tree], mt5_path, mode,
                                                    compiled=args.compile and tree == "work")
                        times[mode][tree].append(wall_ms)
                        cpu_times[mode][tree].append(cpu_ms)
                    print(f"round {round_index + 1}/{args.rounds} {mode}: baseline {times[mode]['baseline'][-1]:.1f} ms, "
                          f"working tree {times[mode]['work'][-1]:.1f} ms", flush=True)

    summary = {}
    print(f"baseline {args.baseline}; threads {args.threads}, batch {args.batch_size}, frames {args.frames}, "
          f"{args.steps} steps x {args.rounds} rounds per tree and mode"
          + ("; working tree with --compile" if args.compile else ""))
    for mode in args.modes:
        summary[mode] = s = side_by_side(times[mode], cpu_times[mode], "ms")
        print(f"{mode:>5}: baseline {s['baseline_ms']:.1f} ms, working tree {s['work_ms']:.1f} ms per step: ratio "
              f"{s['ratio']:.3f} (median of per-round ratios {s['paired_ratio']:.3f}; process CPU time ratio "
              f"{s['cpu_ratio']:.3f})")
    print(json.dumps({"ratio": min(s["ratio"] for s in summary.values()), **summary}))


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
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("pose", "token")
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
TINY = dict(batch_size=2, frames=8, text_len=6, steps=1, rounds=1)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare with (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--text_len", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
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
    sys.path.insert(0, args.code_root)
    import fine_tuning
    import utils
    from models import Uni_Sign
    sys.path.append(os.path.join(ROOT, "script"))  # after the tree's own modules: only the batch maker
    from bench_hyperbolic import random_batch

    utils.init_distributed()
    flags = ["--mt5_path", args.mt5_path, "--batch_size", str(args.batch_size), "--num_workers", "0"]
    if args.mode == "token":
        flags += ["--use_hyperbolic", "--hyp_text_cmp", "token", "--hyp_text_emb_src", "decoder"]
    run_args = fine_tuning.get_args_parser().parse_args(flags)
    run_args.dtype = utils.resolve_dtype(run_args.dtype)
    utils.set_seed(run_args.seed)
    model = Uni_Sign(run_args)
    if args.compile:  # as fine_tuning.main does
        model.compile_pose_encoder()
    train = build_training(run_args, model)

    batch = random_batch(model.mt5_tokenizer, args.batch_size, args.frames, args.text_len)
    batch.update(name=[f"s{i}" for i in range(args.batch_size)], num_skipped=0)
    train([batch], 0)  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    train([batch] * args.steps, 1)
    ms, cpu_ms = (1000 * (end - begin) / args.steps for end, begin in
                  ((time.perf_counter(), start), (time.process_time(), cpu_start)))
    print(json.dumps({"ms_per_step": ms, "cpu_ms_per_step": cpu_ms}), flush=True)


def build_training(run_args, model, total_updates=1000):
    """A function train(batches, epoch) that runs fine_tuning.train_one_epoch on a list of batches with the
    optimizers built as this tree's fine_tuning.main builds them: engine.Engine where the tree has it
    (main since 14eec8c), else (older revisions such as 6d4f403) DeepSpeed with torch AdamW and a
    Riemannian Adam beside it, passed to train_one_epoch separately."""
    import fine_tuning
    import torch
    import utils
    model.set_total_updates(total_updates)
    try:
        from engine import Engine
    except ModuleNotFoundError:
        Engine = None
    if Engine is not None:
        engine = Engine(model, run_args, total_updates, 10)
        if "args" in inspect.signature(fine_tuning.train_one_epoch).parameters:  # trees that passed the flags whole
            return lambda batches, epoch: fine_tuning.train_one_epoch(engine, batches, epoch, run_args)
        return lambda batches, epoch: fine_tuning.train_one_epoch(engine, batches, epoch, len(batches),
                                                                  run_args.log_every, dtype=run_args.dtype)
    import geoopt
    optimizer = torch.optim.AdamW(model.euclidean_param_groups(run_args.weight_decay), lr=run_args.lr,
                                  betas=tuple(run_args.opt_betas))
    ds_engine, _ = utils.deepspeed_initialize(model, optimizer, utils.deepspeed_config(run_args, total_updates, 10))
    hyp_params = model.hyperbolic_parameters()
    for p in hyp_params:  # the geometry stays in float32 whatever DeepSpeed's precision
        p.data = p.data.float()
    hyp_optimizer = geoopt.optim.RiemannianAdam(hyp_params, lr=run_args.hyp_lr, stabilize=100) if hyp_params else None
    return lambda batches, epoch: fine_tuning.train_one_epoch(ds_engine, batches, hyp_optimizer, epoch, run_args)


def single_process_env(**settings):
    """This process's environment without a launcher's rank variables, `settings` on top: a timing process is a
    run of its own (one rank), even when the benchmark itself was started by a launcher."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(settings)
    return env


def run_child(args, code_root, mt5_path, mode, compiled=False):
    """(wall ms, process CPU ms) per step of one process on `code_root`'s code."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--code_root", code_root, "--mt5_path", mt5_path,
           "--mode", mode, "--steps", str(args.steps), "--batch_size", str(args.batch_size),
           "--frames", str(args.frames), "--text_len", str(args.text_len)] + (["--compile"] if compiled else [])
    env = single_process_env(OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(cmd, cwd=code_root, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: the timing process on {code_root} failed (exit {result.returncode}):\n"
                 f"{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return measured["ms_per_step"], measured["cpu_ms_per_step"]


@contextlib.contextmanager
def git_worktree(revision, folder):
    """A detached checkout of `revision` in `folder`, removed afterwards."""
    result = subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", folder, revision],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: --baseline {revision}: git worktree add failed: {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", folder], capture_output=True)


def main(argv=None):
    args = parse(argv)
    if args.child:
        return child(args)
    sys.path.insert(0, os.path.join(ROOT, "script"))
    from bench_hyperbolic import build_tiny_mt5

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


def side_by_side(wall, cpu, unit):
    """The two trees compared from their per-round times in `unit` (wall and process CPU time, each a dict
    {"baseline": [...], "work": [...]} with one time per round): the medians, ratio = median baseline / median work
    (> 1: the working tree is faster), paired_ratio = the median of the rounds' own baseline / work ratios (rounds
    share the machine's load with their neighbours) and cpu_ratio, the ratio of the CPU times' medians."""
    base, work, base_cpu, work_cpu = (statistics.median(times[tree]) for times in (wall, cpu)
                                      for tree in ("baseline", "work"))
    paired = statistics.median(b / w for b, w in zip(wall["baseline"], wall["work"]))
    return {f"baseline_{unit}": round(base, 2), f"work_{unit}": round(work, 2), "ratio": round(base / work, 4),
            "paired_ratio": round(paired, 4), f"baseline_cpu_{unit}": round(base_cpu, 2),
            f"work_cpu_{unit}": round(work_cpu, 2), "cpu_ratio": round(base_cpu / work_cpu, 4)}


if __name__ == "__main__":
    main()

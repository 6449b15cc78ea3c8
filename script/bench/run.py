"""Wall time of a whole short fine_tuning.py run (start-up, one training step, dev + test beam search, saving,
plot, exit) of the working tree against a git revision, in alternating processes.

    python script/benchmark.py run --baseline 955c2d8 [--rounds 5] [--steps 1]

The revision is checked out in a temporary `git worktree`; the demo (script/make_demo.py, dev and test cut
to 12 samples each) is built once in a temporary folder. Each round runs `fine_tuning.py` once per tree,
the order alternating, with the flags the test suite's end-to-end runs use (1 epoch, --quick_break
--steps, token-mode Geo-Sign, batch 4, 2 beams), and reads the process's wall and CPU seconds. The
medians over rounds give `ratio` = baseline / working tree (> 1: the working tree is faster); the
median of per-round ratios and the CPU-time ratio are printed too, since other jobs on the machine
move both sides. Last line: JSON {"ratio", "paired_ratio", "cpu_ratio", "baseline_s", "work_s", ...}.
"""
import gzip
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time

from bench.common import ROOT, git_worktree, side_by_side, side_by_side_parser, single_process_env


def parse(argv):
    parser = side_by_side_parser(__doc__, 1, "training steps of the one epoch (--quick_break)")
    return parser.parse_args(argv)


def build_demo(folder):
    """The demo under `folder`, dev and test cut to 12 samples (as the suite's small_demo); returns its flags."""
    import make_demo
    from safe_pickle import safe_pickle_load
    demo = make_demo.build_demo(folder, seed=0)
    labels = {"train": demo["label_paths"]["train"]}
    for phase in ("dev", "test"):
        with gzip.open(demo["label_paths"][phase], "rb") as f:
            items = safe_pickle_load(f)
        labels[phase] = os.path.join(folder, f"labels.{phase}")
        with gzip.open(labels[phase], "wb") as f:
            pickle.dump(dict(list(items.items())[:12]), f)
    return ["--dataset", "Demo", "--task", "SLT", "--mt5_path", demo["mt5_path"], "--pose_dir", demo["pose_dir"],
            *(flag for phase in ("train", "dev", "test") for flag in (f"--{phase}_label_path", labels[phase]))]


def run_once(code_root, demo_flags, output_dir, args):
    """(wall s, CPU s) of one fine_tuning.py process on `code_root`'s code."""
    flags = demo_flags + ["--output_dir", output_dir, "--overwrite", "--epochs", "1", "--quick_break", str(args.steps),
                          "--batch_size", "4", "--lr", "1e-3", "--warmup-epochs", "0", "--num_workers", "0",
                          "--num_beams", "2", "--max_tgt_len", "20", "--use_hyperbolic", "--hyp_text_cmp", "token",
                          "--hyp_text_emb_src", "decoder"]
    env = {k: v for k, v in single_process_env().items() if not k.startswith("WANDB")}
    env.update(OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "fine_tuning.py", *flags], cwd=code_root, env=env, capture_output=True,
                            text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"error: the run on {code_root} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None):
    args = parse(argv)
    times = {"baseline": [], "work": []}
    cpu = {"baseline": [], "work": []}
    with tempfile.TemporaryDirectory() as tmp:
        demo_flags = build_demo(os.path.join(tmp, "demo"))
        with git_worktree(args.baseline, os.path.join(tmp, "baseline")) as baseline_root:
            roots = {"baseline": baseline_root, "work": ROOT}
            for round_index in range(args.rounds):
                for tree in (("baseline", "work") if round_index % 2 == 0 else ("work", "baseline")):
                    wall, cpu_s = run_once(roots[tree], demo_flags, os.path.join(tmp, f"out_{tree}"), args)
                    times[tree].append(wall)
                    cpu[tree].append(cpu_s)
                print(f"round {round_index + 1}/{args.rounds}: baseline {times['baseline'][-1]:.2f} s, "
                      f"working tree {times['work'][-1]:.2f} s", flush=True)
    summary = side_by_side(times, cpu, "s")
    print(f"baseline {args.baseline}: {summary['baseline_s']:.2f} s, working tree {summary['work_s']:.2f} s per run "
          f"(medians of {args.rounds}): ratio {summary['ratio']:.3f} (median of per-round ratios "
          f"{summary['paired_ratio']:.3f}; CPU time ratio {summary['cpu_ratio']:.3f})")
    print(json.dumps({**summary, "rounds": args.rounds}))


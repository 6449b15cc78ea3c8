"""What several benchmarks share: the repository's root, how a benchmark starts a measuring process of its own,
a checkout of another revision to compare with, and one training step set up as fine_tuning.py sets it up."""
import contextlib
import inspect
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARK = os.path.join(ROOT, "script", "benchmark.py")


def child_command(name, *args):
    """The command that runs benchmark NAME's measuring process (`python script/benchmark.py NAME ARGS`): through
    benchmark.py, as the parent was, so that it imports what the parent imports."""
    return [sys.executable, BENCHMARK, name, *map(str, args)]


def side_by_side_parser(doc, steps, steps_help):
    """The flags of a benchmark that times this working tree against a git revision, round after round:
    --baseline, --rounds, --steps (default `steps`) and --threads; the caller adds its own."""
    import argparse
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare with (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=steps, help=steps_help)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def single_process_env(**settings):
    """This process's environment without a launcher's rank variables, `settings` on top: a timing process is a
    run of its own (one rank), even when the benchmark itself was started by a launcher."""
    from utils import LAUNCH_ENV
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(settings)
    return env


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


def training_step(flags, args):
    """(run_args, model, train, batch) for timing fine_tuning's training step: fine_tuning.py's settings from `flags`
    (plus the token-mode branch when args.mode is "token"), its model built as fine_tuning.main builds it, a
    function train(batches, epoch) (build_training) and one random batch of args' sizes."""
    import fine_tuning
    import utils
    from make_demo import random_batch
    from models import Uni_Sign
    if args.mode == "token":
        flags = flags + ["--use_hyperbolic", "--hyp_text_cmp", "token", "--hyp_text_emb_src", "decoder"]
    run_args = fine_tuning.get_args_parser().parse_args(flags)
    run_args.dtype = utils.resolve_dtype(run_args.dtype)
    utils.set_seed(run_args.seed)
    model = Uni_Sign(run_args)
    if run_args.compile:  # as fine_tuning.main does
        model.compile_pose_encoder()
    train = build_training(run_args, model)
    batch = random_batch(model.mt5_tokenizer, args.batch_size, args.frames, args.text_len)
    batch.update(name=[f"s{i}" for i in range(args.batch_size)], num_skipped=0)
    return run_args, model, train, batch


def build_training(run_args, model, total_updates=1000):
    """A function train(batches, epoch) that runs fine_tuning.train_one_epoch on a list of batches with the
    optimizers built as this tree's fine_tuning.main builds them: engine.Engine(model, TrainConfig, ...) with
    losses.TrainingLoss where the tree has them, engine.Engine(model, args, ...) in trees since 14eec8c, else
    (older revisions such as 6d4f403) DeepSpeed with torch AdamW and a Riemannian Adam beside it, passed to
    train_one_epoch separately."""
    import fine_tuning
    import torch
    import utils
    model.set_total_updates(total_updates)
    try:
        from engine import Engine
    except ModuleNotFoundError:
        Engine = None
    if Engine is not None and "record" in inspect.signature(Engine).parameters:  # the engine takes its settings
        from losses import TrainingLoss
        from train_config import TrainConfig
        engine = Engine(model, TrainConfig.from_args(run_args), total_updates, 10, record=vars(run_args))
        criterion = TrainingLoss(model.config.label_smoothing)
        return lambda batches, epoch: fine_tuning.train_one_epoch(engine, criterion, batches, epoch, len(batches),
                                                                  run_args.log_every, dtype=run_args.dtype)
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

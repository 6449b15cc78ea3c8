"""Set-up helpers for fine_tuning.py and pretraining.py: distributed start, precision, logging, wandb
and the training-curve plot (the training engine and its checkpoints are engine.py's)."""
import contextlib
import dataclasses
import functools
import gc
import io
import json
import os
import random
import socket
import sys

import numpy as np
import torch
import torch.distributed as dist

import gpu_peaks
from atomic import atomic_open


# ---------------------------------------------------------------------------- processes

# What a launcher (deepspeed, torchrun) sets for each process it starts: a process without them is a run of its own.
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")

def use_environment_extension_cache():
    """Keep the C++ ops DeepSpeed compiles on first use (on CPU its communication op, a minute or two) in this
    Python environment's own folder, `<sys.prefix>/torch_extensions`, unless TORCH_EXTENSIONS_DIR is set: one
    cache per environment whatever HOME is, built once by script/setup.sh. (torch's default, under HOME, is
    shared by every environment of the user, and a build from another environment's paths replaces it.)"""
    if "TORCH_EXTENSIONS_DIR" not in os.environ and os.access(sys.prefix, os.W_OK):
        os.environ["TORCH_EXTENSIONS_DIR"] = os.path.join(sys.prefix, "torch_extensions")
    # torch runs the `ninja` first on PATH, and ninja versions hash build commands differently (1.11 and 1.12+): a
    # machine's own ninja and the environment's pip one each saw the other's build as stale and compiled the op
    # again (45 s each time). The environment's own ninja, where it has one, for every process.
    scripts = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if os.access(os.path.join(scripts, "ninja"), os.X_OK) and path[0] != scripts:
        os.environ["PATH"] = os.pathsep.join([scripts, *path])


def build_communication_op():
    """Compile (or find in the cache) the communication op DeepSpeed loads at start-up on this machine's
    accelerator (CPU: its shared-memory all-reduce); nothing where it uses none. script/setup.sh runs this."""
    use_environment_extension_cache()
    import deepspeed
    from deepspeed.accelerator import get_accelerator
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None and deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        builder.load(verbose=False)


def init_distributed():
    """Start torch.distributed through DeepSpeed; works under `deepspeed`, `torchrun` and plain `python`.

    A plain process has no launcher environment, so we give it a one-rank world on a free local port.
    Returns (rank, world_size)."""
    silence_known_notices()
    use_environment_extension_cache()
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            deepspeed.init_distributed(dist_backend=get_accelerator().communication_backend_name(), verbose=False)
    finally:  # what DeepSpeed printed, less the "... built successfully" of its CPU communication op (built once
        for line in said.getvalue().splitlines():  # by setup.sh, loaded by every run): nothing to act on
            if not line.endswith("built successfully"):
                print(line)
    rank, world = dist.get_rank(), dist.get_world_size()
    if get_accelerator().device_name() != "cpu":
        get_accelerator().set_device(local_rank())
    setup_for_distributed(rank == 0)
    return rank, world


# Third-party warnings that say nothing a user can act on: (logger, text in the message).
KNOWN_NOTICES = (
    # transformers 5 always ties mT5's lm_head to its embeddings in the config, then (rightly) keeps the saved,
    # different lm_head of every mT5 checkpoint, google's included, apart; nothing to update on our side
    ("transformers.modeling_utils", "so we will NOT tie them"),
    # WarmupCosineLR's constructor asks itself for its learning rate before its first step
    ("DeepSpeed", "get learning rate from scheduler before it has started"),
)


def silence_known_notices():
    """Drop the KNOWN_NOTICES, and on machines without a GPU tell DeepSpeed it runs on the CPU (instead of its
    "Setting accelerator to CPU. If you have GPU ..." notice). Call before deepspeed is imported."""
    import logging
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for name, text in KNOWN_NOTICES:
        logging.getLogger(name).addFilter(lambda record, text=text: text not in record.getMessage())


def freeze_long_lived_objects():
    """Take every object alive now out of the cyclic garbage collector's reach (gc.freeze). Called as a command
    ends (its `__main__` block, never from code a test process calls), so that Python's shutdown skips its final
    collections over the half a million objects of torch, transformers, DeepSpeed and the model: seconds for a
    short run, for memory that goes back to the system at exit anyway. Files are closed by their `with`
    blocks; sys.stdout and sys.stderr are flushed at exit as usual."""
    gc.freeze()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_for_distributed(is_master):
    """Silence print() on every rank but 0 (errors go to stderr through fail(), from any rank)."""
    import builtins
    builtin_print = builtins.__dict__.setdefault("_geo_sign_print", builtins.print)

    def print_rank0(*args, **kwargs):
        if is_master:
            builtin_print(*args, **kwargs)

    builtins.print = print_rank0


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank():
    """This process's rank on its node (the launcher's LOCAL_RANK; 0 for a plain process): its GPU's index."""
    return int(os.environ.get("LOCAL_RANK", 0))


def device():
    from deepspeed.accelerator import get_accelerator
    name = get_accelerator().device_name()
    return torch.device("cpu") if name == "cpu" else torch.device(name, local_rank())


def comm_device():
    """Where tensors handed to a collective must live: NCCL takes only tensors on the rank's GPU, gloo only
    tensors in host memory (hence a CPU tensor under NCCL: "No backend type associated with device type cpu")."""
    if dist.is_initialized() and dist.get_backend() != "gloo":
        return device()
    return torch.device("cpu")


def config_from_args(cls, args):
    """The dataclass `cls` (ModelConfig, DataConfig) with the fields found in `args`: an argparse or SimpleNamespace,
    a dict (a checkpoint's args) or already a `cls`, returned as it is. Absent fields take their defaults, and
    anything else in `args` is ignored, so that one namespace of flags feeds every settings class."""
    if isinstance(args, cls):
        return args
    values = args if isinstance(args, dict) else vars(args)
    return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls) if field.name in values})


def steps_per_epoch(batches, quick_break=0):
    """Training steps of an epoch: a rank's `batches`, capped at --quick_break when that is set (0: no cap)."""
    return min(batches, quick_break) if quick_break else batches


def run_torchscript_unoptimised():
    """Run TorchScript functions (geoopt's and hyperbolic.py's) unoptimised in this thread: the JIT's default
    executor profiles a scripted function's first calls and then swaps in an optimised graph whose gradients (its
    own autodiff formulas) round differently, so a resumed process, whose functions start over at their first call,
    would drift from an uninterrupted one by ~1e-5 in a few steps, and two functions computing the same formula
    agree bit for bit only when they have been called equally often. Unoptimised, every call runs the same eager
    kernels and autograd formulas."""
    # torch.jit.optimized_execution(False) for the rest of the process (its context manager restores the flag when
    # it ends); thread-local, so set by the thread that runs the model
    torch._C._set_graph_executor_optimize(False)


def set_seed(seed):
    """Seed Python's, numpy's and torch's generators; TorchScript runs unoptimised from here on
    (run_torchscript_unoptimised), so that a run's values do not depend on how often a function ran before."""
    run_torchscript_unoptimised()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def gather_objects(obj):
    """all_gather_object on every rank; a one-rank run returns [obj]."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module):
    """Give every rank rank 0's buffers (BatchNorm running statistics drift apart per rank's data, and
    DeepSpeed, unlike DDP, does not broadcast them), so that all ranks evaluate the saved model."""
    if world_size() == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def all_ranks_true(flag):
    """True only when `flag` is true on every rank (so that all ranks take the same branch)."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


# ---------------------------------------------------------------------------- precision

def resolve_dtype(requested):
    """bf16 on GPUs, fp32 on CPUs unless asked otherwise; a 16-bit type DeepSpeed finds unsupported on this
    machine's accelerator (fp16 on CPUs without oneDNN fp16 kernels, e.g. many AMD ones) is refused up front."""
    dtype = requested or ("bf16" if torch.cuda.is_available() else "fp32")
    from deepspeed.accelerator import get_accelerator
    accelerator = get_accelerator()
    supported = {"fp16": accelerator.is_fp16_supported, "bf16": accelerator.is_bf16_supported}.get(dtype)
    if supported is not None and not supported():
        others = " or ".join(f"--dtype {name}" for name in ("bf16", "fp32") if name != dtype)
        fail(f"--dtype {dtype}: DeepSpeed finds no {dtype} support on this machine's "
             f"{accelerator.device_name()} accelerator; use {others}")
    if dtype == "bf16" and accelerator.device_name() == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        print("warning: --dtype bf16 on a CPU without bf16 instructions (AVX512-BF16/AMX) runs emulated, several "
              "times slower than --dtype fp32 (measured on the demo: 0.9 against 8.6 samples/s)")
    return dtype


def peak_flops(dtype):
    """This GPU's peak FLOP/s for this precision (gpu_peaks.gpu_peak_flops), or None where unknown (CPUs, fp32,
    unlisted or pre-Ampere GPUs under bf16); on a GPU, an unknown peak is said once, with why, as MFU is then not
    reported."""
    if not torch.cuda.is_available():
        return None
    peak, why = gpu_peaks.gpu_peak_flops(torch.cuda.get_device_name(), torch.cuda.get_device_capability(), dtype)
    if why is not None:
        say_once(f"model FLOPs utilisation is not reported: {why}")
    return peak


@functools.lru_cache(maxsize=None)
def say_once(message):
    """print(message) the first time it is asked for in this process."""
    print(message)


# ---------------------------------------------------------------------------- logging

def append_log(output_dir, record):
    """Add one JSON line to log.txt by writing the log anew beside it and renaming it into place (a few lines
    an epoch): a failed write, say on a full disk, leaves the earlier log whole, never half a line."""
    path = os.path.join(output_dir, "log.txt")
    earlier = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            earlier = f.read()
    with atomic_open(path) as f:
        f.write(earlier + json.dumps(record) + "\n")


def read_log(output_dir):
    """The per-epoch records of log.txt."""
    with open(os.path.join(output_dir, "log.txt"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_predictions(output_dir, split, names, hyps, refs):
    """The literature's pair of files (`sample: NAME, prediction: TEXT` / `..., ground-truth: TEXT`),
    which SLRT_metrics.py scores as they are."""
    with open(os.path.join(output_dir, f"{split}_tmp_pres.txt"), "w", encoding="utf-8") as f:
        f.writelines(f"sample: {n}, prediction: {h}\n" for n, h in zip(names, hyps))
    with open(os.path.join(output_dir, f"{split}_tmp_refs.txt"), "w", encoding="utf-8") as f:
        f.writelines(f"sample: {n}, ground-truth: {r}\n" for n, r in zip(names, refs))


def report_skipped(output_dir, split, paths, total, shown=3):
    """Name the pose files of a split that --skip_bad_samples skipped: the first `shown` in one line, all of them
    in output_dir/<split>_skipped_samples.txt (written by rank 0), so that they can be fixed or removed."""
    listing = os.path.join(output_dir, f"{split}_skipped_samples.txt")
    if is_main_process():
        with open(listing, "w", encoding="utf-8") as f:
            f.writelines(path + "\n" for path in paths)
    first = ", ".join(paths[:shown]) + (", ..." if len(paths) > shown else "")
    print(f"skipped {len(paths)} bad {split} samples (--skip_bad_samples): scored {total - len(paths)} of {total}; "
          f"skipped: {first} (all listed in {listing})")


def init_wandb(args):
    """wandb run on rank 0; offline (and saying where) when there are no credentials."""
    if not (args.wandb and is_main_process()):
        return None
    import wandb
    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        has_key = bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_wandb()
        mode = "online" if has_key else "offline"
    run = wandb.init(project=args.wandb_project, name=args.wandb_run_name, config=vars(args),
                     dir=args.output_dir, mode=mode)
    if mode == "offline":
        print(f"wandb: no credentials, logging offline to {run.dir} (upload later with `wandb sync`)")
    return run


def _netrc_has_wandb():
    path = os.path.expanduser("~/.netrc")
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        return "api.wandb.ai" in f.read()


def plot_curves(output_dir, metric):
    """training_curves.png from log.txt: train loss and dev/test `metric` per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_log(output_dir) if "epoch" in r]
    if not records:
        return None
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "train_ce_loss", "train_hyp_loss"):
        if key in records[0]:
            ax_loss.plot(epochs, [r.get(key) for r in records], marker="o", label=key[6:])
    ax_loss.set_xlabel("epoch"), ax_loss.set_title("training loss"), ax_loss.legend()
    for split in ("dev", "test"):
        key = f"{split}_{metric}"
        if key in records[0]:
            ax_metric.plot(epochs, [r.get(key) for r in records], marker="o", label=split)
    ax_metric.set_xlabel("epoch"), ax_metric.set_title(metric), ax_metric.legend()
    fig.tight_layout()
    path = os.path.join(output_dir, "training_curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def ensure_writable_dir(path, flag):
    """Create the folder `path` (the value of `flag`) if needed and check that a file can be written in it,
    before any work whose result would go there; else stop with one `error:` line naming the flag."""
    if os.path.exists(path) and not os.path.isdir(path):
        fail(f"{flag} {path} is a file, not a folder: choose another {flag}")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
    except OSError as err:
        fail(f"{flag} {path} cannot be written ({err.strerror}): choose another {flag}")


def fail(message):
    """Stop with a clear message (no traceback); every rank says it, since any rank may be the one that failed."""
    sys.stderr.write(f"error: {message}\n")
    sys.exit(1)

"""The training engine: DeepSpeed for the Euclidean parameters, Riemannian Adam (geoopt) beside it for
the hyperbolic branch's ManifoldParameters, and the checkpoints.

    engine = Engine(model, args, total_updates, warmup_updates)
    start_epoch, best = engine.resume(output_dir) if args.resume else (0, None)
    out = engine(batch); engine.step(out["loss"])               # every micro-batch
    engine.save(output_dir, epoch, best, improved)              # every epoch

Two kinds of checkpoint are written:
- output_dir/checkpoint.pth (+ best_checkpoint.pth): a plain dict with the release's keys, written and read
  by model_io.py (write_checkpoint, read_model), that --finetune / --eval and the release load; its `model`
  holds the fp32 master weights;
- output_dir/deepspeed/epoch<N>/: DeepSpeed's resumable state (both optimizers, the scheduler, RNG,
  epoch, best score), of which only the newest epoch is kept. `deepspeed/latest` names it.

What is trusted: nothing read back runs code. --resume first loads every file of the tag with
torch.load(weights_only=True), allowing only tensors, containers and the four DeepSpeed types listed
in `deepspeed_safe_globals`, and refuses the tag otherwise; only then does DeepSpeed load it.
"""
import contextlib
import functools
import glob
import os
import random
import re
import shutil
import signal
import socket

import numpy as np
import torch
import torch.distributed as dist

import utils
from atomic import atomic_open, disk_is_full
from model_io import CheckpointError, write_checkpoint
from safe_pickle import refusal_reason

# Flags that say where and how a run is watched, not what it trains: they may differ on --resume.
RUN_ONLY_FLAGS = {"resume", "output_dir", "local_rank", "num_workers", "wandb", "wandb_project", "wandb_run_name",
                  "save_one_batch", "eval", "finetune", "log_every", "config", "overwrite"}


class Stopped(BaseException):
    """SIGTERM or SIGINT. A BaseException, like KeyboardInterrupt, so that it unwinds through every
    `finally` (temporary files are removed) and no `except Exception` swallows it."""

    def __init__(self, signum):
        self.signum, self.name = int(signum), signal.Signals(signum).name
        super().__init__(self.name)


def deepspeed_config(args, total_updates, warmup_updates):
    """The DeepSpeed config for our flags: precision, ZeRO stage, accumulation, clipping and the
    cosine schedule with linear warmup (DeepSpeed's WarmupCosineLR, stepped once per update)."""
    return {
        "train_micro_batch_size_per_gpu": args.batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "gradient_clipping": args.gradient_clipping,
        "bf16": {"enabled": args.dtype == "bf16"},
        "fp16": {"enabled": args.dtype == "fp16", "initial_scale_power": 16},
        "zero_optimization": {"stage": args.zero_stage},
        "zero_allow_untested_optimizer": True,  # our AdamW is torch's own
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "scheduler": {"type": "WarmupCosineLR", "params": {
            "total_num_steps": max(total_updates, 1),
            "warmup_num_steps": max(1, min(warmup_updates, total_updates - 1)),  # DeepSpeed wants >= 1
            "warmup_type": "linear",
            "warmup_min_ratio": 0.0,
            "cos_min_ratio": args.min_lr / args.lr if args.lr > 0 else 0.0,
        }},
    }


def deepspeed_initialize(model, optimizer, ds_config):
    """deepspeed.initialize, working around DeepSpeed's start-up broadcast, which views every parameter as
    bytes and so fails on 0-d parameters (our scalars: temperature, margin, log scales, curvature).
    We broadcast those ourselves and hide them from DeepSpeed's broadcast for its duration. The module is
    would still be in host memory here (DeepSpeed moves it later) while NCCL broadcasts only GPU tensors,
    so it moves to the communication device first (DeepSpeed's own move is then a no-op). Under bf16/fp16 the
    BatchNorm layers keep float32 running statistics (batchnorm_float32_statistics)."""
    import deepspeed
    if utils.world_size() > 1:
        model.to(utils.comm_device())
    scalars = [p for p in model.parameters() if p.dim() == 0]
    for p in scalars:
        if utils.world_size() > 1:
            dist.broadcast(p.data.reshape(1), src=0)
        p.ds_optim_param = True  # DeepSpeed's broadcast skips parameters marked so
    try:
        engine, _, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    finally:
        for p in scalars:
            del p.ds_optim_param
    if next(engine.module.parameters()).dtype != torch.float32:
        for module in engine.module.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.forward = functools.partial(batchnorm_float32_statistics, module)
    return engine, scheduler


def batchnorm_float32_statistics(norm, x):
    """BatchNorm's forward for a module whose weights DeepSpeed made 16-bit, with its running statistics kept in
    float32 (DeepSpeed casts the parameters, not the buffers): normalised in float32, returned in x's dtype. In bf16
    (8 bits of mantissa) an update momentum (batch - running) below half a unit in the last place vanishes: with
    momentum 0.1 every change under ~4 % of the running value, so a running mean of 10 stalled at 9.56 (measured,
    tests/test_engine.py). torch's CPU kernel refuses 16-bit weights with float32 statistics, hence the casts."""
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)  # as BatchNorm's own forward counts (its momentum=None mean uses it)
    momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
    use_batch = norm.training or norm.running_mean is None
    out = torch.nn.functional.batch_norm(
        x.float(), norm.running_mean if not norm.training or norm.track_running_stats else None,
        norm.running_var if not norm.training or norm.track_running_stats else None,
        None if norm.weight is None else norm.weight.float(), None if norm.bias is None else norm.bias.float(),
        use_batch, momentum, norm.eps)
    return out.to(x.dtype)


def step_hyperbolic(optimizer, max_norm, grad_scale=1.0):
    """Riemannian Adam steps once per optimizer update, on gradients divided by `grad_scale` (DeepSpeed's
    fp16 loss scale), averaged over ranks (idempotent when DeepSpeed already reduced them) and clipped
    like the Euclidean ones."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if grad_scale != 1.0:
        for p in params:
            p.grad.div_(grad_scale)
    if utils.world_size() > 1:
        for p in params:
            dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class Engine:
    """DeepSpeed's engine (AdamW, schedule, precision, ZeRO) plus Riemannian Adam for the hyperbolic
    parameters, stepped together once per optimizer update; saves and resumes both."""

    def __init__(self, model, args, total_updates, warmup_updates):
        import geoopt
        self.args = args
        self.last_saved_epoch = None
        optimizer = torch.optim.AdamW(model.euclidean_param_groups(args.weight_decay), lr=args.lr,
                                      betas=tuple(args.opt_betas))
        hyp_params = model.hyperbolic_parameters() if args.use_hyperbolic else []
        hyp_values = [p.data.float().clone() for p in hyp_params]
        ds_config = deepspeed_config(args, total_updates, warmup_updates)
        # DeepSpeed's fp32 path without ZeRO steps the torch optimizer as it is: its clipping takes every parameter
        # of the module (the hyperbolic ones too, which Riemannian Adam clips itself) and fails on 0-d gradients,
        # and its step clears every gradient of the module, the hyperbolic ones before Riemannian Adam has used
        # them. On that path we clip AdamW's parameters ourselves, as DeepSpeed's other paths clip only theirs,
        # and keep the hyperbolic gradients across DeepSpeed's step.
        self.fp32_without_zero = args.zero_stage == 0 and args.dtype == "fp32"
        self.euclidean_params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.fp32_without_zero:
            ds_config["gradient_clipping"] = 0.0
        self.ds, _ = deepspeed_initialize(model, optimizer, ds_config)
        for p, value in zip(hyp_params, hyp_values):  # the geometry stays in float32 whatever DeepSpeed's
            p.data = value.to(p.device)  # precision, from its float32 values (not their 16-bit rounding)
        self.hyp_optimizer = (geoopt.optim.RiemannianAdam(hyp_params, lr=args.hyp_lr, stabilize=100)
                              if hyp_params else None)

    @property
    def module(self):
        return self.ds.module

    def train(self):
        self.ds.train()

    def __call__(self, batch):
        return self.ds(batch)

    def step(self, loss):
        """Backward of one micro-batch; at an accumulation boundary, one update of both optimizers and of
        the model's update counter (alpha's schedule). Under fp16 DeepSpeed scales the loss, so the
        hyperbolic gradients are divided by the same scale, and when DeepSpeed skips an update (gradient
        overflow; it then lowers the scale and does not advance its schedule) Riemannian Adam skips it too."""
        boundary = self.ds.is_gradient_accumulation_boundary()
        scale = self.loss_scale()  # read before step(), which lowers it after an overflow
        self.ds.backward(loss)  # at a boundary, the gradients are averaged over ranks here
        kept = []
        if boundary and self.fp32_without_zero:
            if self.args.gradient_clipping > 0:
                torch.nn.utils.clip_grad_norm_(self.euclidean_params, self.args.gradient_clipping)
            if self.hyp_optimizer is not None:
                kept = [(p, p.grad) for group in self.hyp_optimizer.param_groups for p in group["params"]]
        self.ds.step()
        for p, grad in kept:
            p.grad = grad
        if not boundary:
            return
        applied = self.ds.was_step_applied()
        if self.hyp_optimizer is not None:
            if applied:
                step_hyperbolic(self.hyp_optimizer, self.args.gradient_clipping, grad_scale=scale)
            else:
                self.hyp_optimizer.zero_grad(set_to_none=True)
        if applied:
            self.module.count_update()

    def loss_scale(self):
        """DeepSpeed's current fp16 loss scale (1 for bf16 and fp32, which are not scaled)."""
        if not self.ds.fp16_enabled():
            return 1.0
        return float(self.ds.optimizer.loss_scale)

    def lr(self):
        return self.ds.get_lr()[0]

    def lrs(self):
        """The current learning rates, for logging."""
        lrs = {"lr": self.lr()}
        if self.hyp_optimizer is not None:
            lrs["hyp_lr"] = self.hyp_optimizer.param_groups[0]["lr"]
        return lrs

    # ------------------------------------------------------------------------ checkpoints

    def save(self, output_dir, epoch, best, improved):
        """checkpoint.pth (+ best_checkpoint.pth) as plain dicts the release can load, written atomically
        on rank 0; then the resumable DeepSpeed state (optimizers, scheduler, RNG) in
        output_dir/deepspeed/epoch<N>, which becomes `latest` only once every rank has written its part.
        A save that fails or is stopped removes what it wrote; the previous epoch's state stays."""
        state = model_state_dict(self.ds)
        if utils.is_main_process():
            write_checkpoint(output_dir, state, epoch, vars(self.args), best, int(self.module.global_step),
                             improved)
        ds_dir = os.path.join(output_dir, "deepspeed")
        tag = f"epoch{epoch}"
        client = {"epoch": epoch, "best": best, "args": plain_args(self.args),
                  "rng": utils.gather_objects(rng_state()),
                  "hyp_optimizer": self.hyp_optimizer.state_dict() if self.hyp_optimizer is not None else None}
        try:
            # `latest` is ours (written atomically below), not DeepSpeed's (truncated, then written)
            self.ds.save_checkpoint(ds_dir, tag=tag, client_state=client, save_latest=False)
        except BaseException as err:
            full = disk_is_full(err, ds_dir)
            if utils.local_rank() == 0 and latest_tag(ds_dir) != tag:
                shutil.rmtree(os.path.join(ds_dir, tag), ignore_errors=True)
            if full:
                kept = (f"epoch {self.last_saved_epoch} stays resumable" if self.last_saved_epoch is not None
                        else "no earlier epoch was saved")
                raise CheckpointError(f"could not write {os.path.join(ds_dir, tag)}: the disk is full; free some "
                                      f"space ({kept})") from err
            raise
        if utils.local_rank() == 0:  # every node: its own copy of the shards may live on its own disk
            commit(ds_dir, tag)
        self.last_saved_epoch = epoch

    def resume(self, output_dir):
        """Restore the state save() wrote, after checking that none of its files can run code; returns
        (first epoch to train, best dev score so far). A state saved with another number of ranks is
        restored with the model, schedule and Riemannian Adam state; a partitioned (ZeRO) AdamW state
        cannot be resharded here, so AdamW's moments restart, with a warning."""
        ds_dir = os.path.join(output_dir, "deepspeed")
        tag = latest_tag(ds_dir)
        if tag is None or not os.path.isfile(os.path.join(ds_dir, tag, "mp_rank_00_model_states.pt")):
            last = os.path.join(output_dir, "checkpoint.pth")
            if os.path.isfile(last):
                raise CheckpointError(f"--resume: {ds_dir} holds no complete resumable state (the run stopped before "
                                      f"its first optimizer state was saved), though {last} holds weights: start a new "
                                      f"run with --finetune {last} to keep them (the optimizers and the schedule "
                                      "restart)")
            raise CheckpointError(f"--resume: no resumable state in {ds_dir}; start without --resume")
        saved = check_resumable_state(os.path.join(ds_dir, tag))
        self._check_same_model(saved, ds_dir)
        saved_world = int(saved.get("dp_world_size", utils.world_size()))
        partitioned = bool(glob.glob(os.path.join(ds_dir, tag, "*zero_pp_rank_*optim_states.pt")))
        reshaped = saved_world != utils.world_size() and partitioned
        if reshaped:
            print(f"warning: --resume: the state was saved by {saved_world} ranks and this run has "
                  f"{utils.world_size()}; DeepSpeed's partitioned AdamW state cannot be resharded here, so AdamW's "
                  f"moments restart, and under bf16/fp16 its fp32 master weights restart from the 16-bit ones (weights, "
                  f"learning-rate schedule, alpha's schedule, Riemannian Adam, epoch and best score continue)")
        path, client = self.ds.load_checkpoint(ds_dir, tag=tag, load_optimizer_states=not reshaped,
                                               load_lr_scheduler_states=True)
        if path is None:
            raise CheckpointError(f"--resume: DeepSpeed could not load {os.path.join(ds_dir, tag)}")
        if self.hyp_optimizer is not None:
            self.hyp_optimizer.load_state_dict(client["hyp_optimizer"])
            for state in self.hyp_optimizer.state.values():  # torch loads geoopt's integer step count as a
                if torch.is_tensor(state.get("step")):  # float tensor, which changes the bias corrections' rounding
                    state["step"] = int(state["step"].item())
        if utils.rank() < len(client["rng"]):
            set_rng_state(client["rng"][utils.rank()])
        self.last_saved_epoch = client["epoch"]
        print(f"Resumed from {path}: continuing at epoch {client['epoch'] + 1} (best dev score {client['best']})")
        return client["epoch"] + 1, client["best"]

    def _check_same_model(self, saved, ds_dir):
        """Refuse, naming the flags that differ, a resumable state of another model (say, one saved
        with --use_hyperbolic resumed without it), instead of DeepSpeed's unexpected-keys traceback."""
        theirs = {k: tuple(v.shape) for k, v in (saved.get("module") or {}).items()}
        if not theirs or self.ds.zero_optimization_stage() == 3:  # ZeRO-3 saves partitions, not shapes
            return
        ours = {k: tuple(v.shape) for k, v in self.module.state_dict().items()}
        if ours == theirs:
            return
        saved_args, args = saved.get("args") or {}, plain_args(self.args)
        flags = [f"--{k} {saved_args[k]!r} (now {args.get(k)!r})" for k in sorted(saved_args)
                 if k not in RUN_ONLY_FLAGS and saved_args[k] != args.get(k)]
        differing = sorted(set(ours) ^ set(theirs)) or sorted(k for k in ours if ours[k] != theirs[k])
        raise CheckpointError(f"--resume: the state in {ds_dir} belongs to another model ({len(differing)} tensors "
                              f"differ, e.g. {differing[0]}); it was saved with "
                              + (", ".join(flags) if flags else "the same flags")
                              + ": resume with the saved flags, or start a new run in another --output_dir")


def plain_args(args):
    """The flags as a dict of plain values (what a weights_only load reads back)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}


# ---------------------------------------------------------------------------- resumable state on disk

def deepspeed_safe_globals():
    """The non-tensor types DeepSpeed pickles into its checkpoint files (ZeRO's fragment addresses and
    stage, the fp16 loss scalers): plain data, rebuilt without running code of the file's choosing."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    return [DynamicLossScaler, LossScaler, ZeroStageEnum, fragment_address]


def load_trusted(path):
    """torch.load that runs no code from the file: tensors, containers and deepspeed_safe_globals() only.
    Memory-mapped, so checking a multi-GB optimizer state reads little of it."""
    with torch.serialization.safe_globals(deepspeed_safe_globals()):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def check_resumable_state(tag_dir, reader="--resume"):
    """Load every file of a DeepSpeed tag with load_trusted() before DeepSpeed (which unpickles without
    restriction) may read it; a CheckpointError, its message starting with `reader` (what was about to read it),
    names the first file that holds anything else. Returns the model-states dict (DeepSpeed's metadata and our
    client state)."""
    model_states = None
    for path in sorted(glob.glob(os.path.join(tag_dir, "**", "*"), recursive=True)):
        if os.path.isdir(path):
            continue
        try:
            content = load_trusted(path)
        except Exception as err:  # noqa: BLE001 -- any failure means the file is not what save() wrote
            raise CheckpointError(f"{reader}: refusing {path}: it is not a checkpoint file holding only tensors and "
                                  f"DeepSpeed's own types ({refusal_reason(err, 200)}). Resumable state is never "
                                  "unpickled beyond that; if this folder is not yours, start a new run") from err
        if os.path.basename(path) == "mp_rank_00_model_states.pt":
            model_states = content
    return model_states


def latest_tag(ds_dir):
    """The tag named by ds_dir/latest when it is one of ours (epoch<N>), else None."""
    try:
        with open(os.path.join(ds_dir, "latest"), encoding="utf-8") as f:
            tag = f.read().strip()
    except OSError:
        return None
    return tag if re.fullmatch(r"epoch\d+", tag) else None


def commit(ds_dir, tag):
    """Make `tag` the resumable state (ds_dir/latest, replaced atomically), then remove older tags: only
    the newest is kept, it alone holds the optimizer moments. Run by each node's local rank 0, so that
    nodes writing their shards to their own disks prune their own copies (on a shared file system the
    nodes' removals of the same folders are harmless)."""
    tmp = os.path.join(ds_dir, f"latest.tmp-{socket.gethostname()}-{os.getpid()}")
    with atomic_open(os.path.join(ds_dir, "latest"), tmp=tmp) as f:
        f.write(tag)
    for name in os.listdir(ds_dir):
        if re.fullmatch(r"epoch\d+", name) and name != tag:
            shutil.rmtree(os.path.join(ds_dir, name), ignore_errors=True)


def rng_state():
    """This process's random generators as tensors and plain numbers (loadable with weights_only): Python's,
    numpy's, torch's host generator and, on a GPU, the generator of this rank's device (mT5's dropout draws
    from it), through DeepSpeed's accelerator API. The CPU accelerator's generator is torch's host one."""
    from deepspeed.accelerator import get_accelerator
    np_state = np.random.get_state(legacy=False)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])}}
    accelerator = get_accelerator()
    if accelerator.device_name() != "cpu":
        state["accelerator"] = {"name": accelerator.device_name(), "state": accelerator.get_rng_state()}
    return state


def set_rng_state(state):
    """Restore what rng_state() saved. The device generator is restored on the same kind of accelerator; a state
    saved before it was kept, or on another kind, leaves it as set_seed seeded it (with a warning on a GPU)."""
    from deepspeed.accelerator import get_accelerator
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    accelerator, saved = get_accelerator(), state.get("accelerator")
    if accelerator.device_name() == "cpu":
        return
    if saved is not None and saved["name"] == accelerator.device_name():
        accelerator.set_rng_state(saved["state"])
    else:
        print(f"warning: --resume: the saved state holds no {accelerator.device_name()} random generator (saved "
              f"{'on ' + saved['name'] if saved else 'before it was kept'}), so dropout draws differ from an "
              "uninterrupted run's")


# ---------------------------------------------------------------------------- plain checkpoints

def model_state_dict(engine):
    """The whole model's state dict as fp32 CPU tensors on rank 0 (None elsewhere). Each trained
    parameter is the optimizer's fp32 master copy (under bf16/fp16 the module holds 16-bit copies of it;
    DeepSpeed's public safe_get_full_fp32_param assembles it from the ZeRO partitions); parameters
    without a master (fp32 training, the float32 hyperbolic branch) are the module's own; buffers (BatchNorm
    statistics, float32 also under bf16/fp16: batchnorm_float32_statistics) are cast to fp32. Every rank must call
    it: assembling partitions is collective."""
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param
    module = engine.module
    names = dict(module.named_parameters(remove_duplicate=False))  # tied weights appear under each name
    masters = {}
    for param in dict.fromkeys(names.values()):  # each shared parameter once, in the same order on every rank
        master = safe_get_full_fp32_param(param) if param.requires_grad else None
        if master is None:
            master = _unfused_fp32_master(engine.optimizer, param)
        masters[param] = master
    gather = (deepspeed.zero.GatheredParameters(list(masters), modifier_rank=None)
              if engine.zero_optimization_stage() == 3 else contextlib.nullcontext())
    with gather:
        if not utils.is_main_process():
            return None
        state = {}
        for key, value in module.state_dict(keep_vars=True).items():
            master = masters.get(names[key]) if key in names else None
            tensor = master if master is not None else value.detach()
            state[key] = tensor.float().cpu().clone() if tensor.is_floating_point() else tensor.cpu().clone()
    return state


def _unfused_fp32_master(optimizer, param):
    """The fp32 master of `param` under DeepSpeed's non-ZeRO 16-bit optimizer (bf16/fp16 with ZeRO stage 0),
    which keeps fp32_groups parallel to fp16_groups and has no public accessor; None elsewhere."""
    for low, high in zip(getattr(optimizer, "fp16_groups", []), getattr(optimizer, "fp32_groups", [])):
        if isinstance(low, list) and isinstance(high, list):
            for p, master in zip(low, high):
                if p is param and master.shape == param.shape:
                    return master
    return None


# The temporary files model_io.write_checkpoint and utils.append_log write in an output folder (atomic.atomic_path's
# default names), and commit's in its deepspeed/ folder (which carries the host's name: pids are per machine).
TEMPORARY_FILES = re.compile(r"(?:checkpoint\.pth|best_checkpoint\.pth|log\.txt)\.tmp-(?P<pid>\d+)")


def remove_stale_temporaries(output_dir):
    """Remove the temporary files a process killed mid-write (kill -9, a node lost) left in `output_dir`: ours
    only (TEMPORARY_FILES, and deepspeed/latest.tmp-<this host>-<pid>), and only where that pid is no longer a
    live process of this machine; says so in one line. A half-written checkpoint.pth.tmp-<pid> is as large as
    the checkpoint. Run at the start of a training run, which owns its output folder (check_output_dir)."""
    ds_dir = os.path.join(output_dir, "deepspeed")
    latest = re.compile(rf"latest\.tmp-{re.escape(socket.gethostname())}-(?P<pid>\d+)")
    stale = [os.path.join(folder, name) for folder, pattern in ((output_dir, TEMPORARY_FILES), (ds_dir, latest))
             if os.path.isdir(folder) for name in sorted(os.listdir(folder))
             if (match := pattern.fullmatch(name)) and not process_is_alive(int(match["pid"]))]
    for path in stale:
        os.remove(path)
    if stale:
        print(f"removed {len(stale)} temporary file(s) that stopped runs left half-written: " + ", ".join(stale))
    return stale


def process_is_alive(pid):
    """Whether `pid` is a live process on this machine (signal 0 checks without sending anything; a process of
    another user answers EPERM and counts as alive). A zombie (ended, not yet waited for by its parent, such as a
    launcher's rank) is not alive."""
    if not 0 < pid < 2**31:
        return True  # not a process id os.kill checks (0 and negatives address groups): keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # the state follows the (command name)
    except (OSError, IndexError):
        return True  # no /proc (macOS): signal 0 has answered


# ---------------------------------------------------------------------------- signals

@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGTERM and SIGINT raise Stopped in this process, so that the run unwinds
    cleanly; DataLoader workers forked meanwhile behave as without the handler."""
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() == owner:
            raise Stopped(signum)
        if signum == signal.SIGINT:  # a worker: torch's worker loop expects KeyboardInterrupt
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)  # and dies of SIGTERM, as DataLoader's shutdown expects
        os.kill(os.getpid(), signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

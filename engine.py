"""The training engine: DeepSpeed for the Euclidean parameters, Riemannian Adam (geoopt) beside it for
the hyperbolic branch's ManifoldParameters, and the checkpoints (what they keep on disk to resume, the random
state and the signals are checkpointing.py's).

    engine = Engine(model, TrainConfig.from_args(args), total_updates, warmup_updates, record=vars(args))
    start_epoch, best = engine.resume(output_dir) if args.resume else (0, None)
    engine.step(criterion(engine(batch))["loss"])               # every micro-batch (losses.TrainingLoss)
    engine.save(output_dir, epoch, best_score, is_best)         # every epoch

Two kinds of checkpoint are written:
- output_dir/checkpoint.pth (+ best_checkpoint.pth): a plain dict with the release's keys, written and read
  by model_io.py (write_checkpoint, read_model), that --finetune / --eval and the release load; its `model`
  holds the fp32 master weights;
- output_dir/deepspeed/epoch<N>/: DeepSpeed's resumable state (both optimizers, the scheduler, RNG,
  epoch, best score), of which only the newest epoch is kept. `deepspeed/latest` names it.

What is trusted: nothing read back runs code (checkpointing.check_resumable_state).
"""
import contextlib
import functools
import glob
import os
import shutil

import torch
import torch.distributed as dist

import utils
from atomic import disk_is_full
# the resumable state's files, RNG and signals (checkpointing.py), named here too for the engine's callers
from checkpointing import (Stopped, check_resumable_state, commit, load_trusted,  # noqa: F401
                           plain_args, remove_stale_temporaries, rng_state, set_rng_state, stop_on_signals)
from model_io import CheckpointError, latest_tag, write_checkpoint  # noqa: F401 (latest_tag: named here too)

# Flags that say where and how a run is watched, not what it trains: they may differ on --resume.
RUN_ONLY_FLAGS = {"resume", "output_dir", "local_rank", "num_workers", "wandb", "wandb_project", "wandb_run_name",
                  "save_one_batch", "eval", "finetune", "log_every", "config", "overwrite", "no_report"}


def deepspeed_config(train, total_updates, warmup_updates):
    """The DeepSpeed config of a TrainConfig: precision, ZeRO stage, accumulation, clipping and the
    cosine schedule with linear warmup (DeepSpeed's WarmupCosineLR, stepped once per update)."""
    return {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "gradient_clipping": train.gradient_clipping,
        "bf16": {"enabled": train.dtype == "bf16"},
        "fp16": {"enabled": train.dtype == "fp16", "initial_scale_power": 16},
        "zero_optimization": {"stage": train.zero_stage},
        "zero_allow_untested_optimizer": True,  # our AdamW is torch's own
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "scheduler": {"type": "WarmupCosineLR", "params": {
            "total_num_steps": max(total_updates, 1),
            "warmup_num_steps": max(1, min(warmup_updates, total_updates - 1)),  # DeepSpeed wants >= 1
            "warmup_type": "linear",
            "warmup_min_ratio": 0.0,
            "cos_min_ratio": train.min_lr / train.lr if train.lr > 0 else 0.0,
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
    parameters, stepped together once per optimizer update; saves and resumes both.

    train: the TrainConfig it reads (optimizers, schedule, precision, ZeRO stage, clipping); record: the run's
    flags ({flag: value}), which every checkpoint keeps as its `args` and --resume compares."""

    def __init__(self, model, train, total_updates, warmup_updates, record):
        import geoopt
        self.train_config, self.record = train, record
        self.last_saved_epoch = None
        optimizer = torch.optim.AdamW(model.euclidean_param_groups(train.weight_decay), lr=train.lr,
                                      betas=tuple(train.opt_betas))
        hyp_params = model.hyperbolic_parameters() if model.config.use_hyperbolic else []
        hyp_values = [p.data.float().clone() for p in hyp_params]
        ds_config = deepspeed_config(train, total_updates, warmup_updates)
        # DeepSpeed's fp32 path without ZeRO steps the torch optimizer as it is: its clipping takes every parameter
        # of the module (the hyperbolic ones too, which Riemannian Adam clips itself) and fails on 0-d gradients,
        # and its step clears every gradient of the module, the hyperbolic ones before Riemannian Adam has used
        # them. On that path we clip AdamW's parameters ourselves, as DeepSpeed's other paths clip only theirs,
        # and keep the hyperbolic gradients across DeepSpeed's step.
        self.fp32_without_zero = train.zero_stage == 0 and train.dtype == "fp32"
        self.euclidean_params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.fp32_without_zero:
            ds_config["gradient_clipping"] = 0.0
        self.ds, _ = deepspeed_initialize(model, optimizer, ds_config)
        for p, value in zip(hyp_params, hyp_values):  # the geometry stays in float32 whatever DeepSpeed's
            p.data = value.to(p.device)  # precision, from its float32 values (not their 16-bit rounding)
        self.hyp_optimizer = (geoopt.optim.RiemannianAdam(hyp_params, lr=train.hyp_lr, stabilize=100)
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
            if self.train_config.gradient_clipping > 0:
                torch.nn.utils.clip_grad_norm_(self.euclidean_params, self.train_config.gradient_clipping)
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
                step_hyperbolic(self.hyp_optimizer, self.train_config.gradient_clipping, grad_scale=scale)
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

    def save(self, output_dir, epoch, best_score, is_best):
        """checkpoint.pth (+ best_checkpoint.pth when is_best: this epoch's dev score is the run's best_score so far)
        as plain dicts the release can load, written atomically on rank 0; then the resumable DeepSpeed state
        (optimizers, scheduler, RNG) in output_dir/deepspeed/epoch<N>, which becomes `latest` only once every rank has written its part.
        A save that fails or is stopped removes what it wrote; the previous epoch's state stays."""
        state = model_state_dict(self.ds)
        if utils.is_main_process():
            write_checkpoint(output_dir, state, epoch, self.record, best_score, int(self.module.global_step),
                             is_best)
        ds_dir = os.path.join(output_dir, "deepspeed")
        tag = f"epoch{epoch}"
        client = {"epoch": epoch, "best": best_score, "args": plain_args(self.record),
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
        saved_args, args = saved.get("args") or {}, plain_args(self.record)
        flags = [f"--{k} {saved_args[k]!r} (now {args.get(k)!r})" for k in sorted(saved_args)
                 if k not in RUN_ONLY_FLAGS and saved_args[k] != args.get(k)]
        differing = sorted(set(ours) ^ set(theirs)) or sorted(k for k in ours if ours[k] != theirs[k])
        raise CheckpointError(f"--resume: the state in {ds_dir} belongs to another model ({len(differing)} tensors "
                              f"differ, e.g. {differing[0]}); it was saved with "
                              + (", ".join(flags) if flags else "the same flags")
                              + ": resume with the saved flags, or start a new run in another --output_dir")


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

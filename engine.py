"""The training engine: DeepSpeed for the Euclidean parameters, Riemannian Adam (geoopt) beside it for
the hyperbolic branch's ManifoldParameters, and the checkpoints.

    engine = Engine(model, args, total_updates, warmup_updates)
    start_epoch, best = engine.resume(output_dir) if args.resume else (0, None)
    out = engine(batch); engine.step(out["loss"])               # every micro-batch
    engine.save(output_dir, epoch, best, improved)              # every epoch

Two kinds of checkpoint are written:
- output_dir/checkpoint.pth (+ best_checkpoint.pth): a plain dict with the release's keys (`model`,
  `epoch`, `args`, `max_accuracy`, `global_step`) that --finetune / --eval and the release load;
- output_dir/deepspeed/epoch<N>/: DeepSpeed's resumable state (both optimizers, the scheduler, RNG,
  epoch, best score), of which only the newest epoch is kept.
"""
import os
import shutil

import torch
import torch.distributed as dist

import utils


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
    We broadcast those ourselves and hide them from DeepSpeed's broadcast for its duration."""
    import deepspeed
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
    # DeepSpeed casts the parameters to bf16/fp16 but not the buffers; BatchNorm wants its running
    # statistics in its weights' dtype, so cast them as Module.to(dtype) would have.
    dtype = next(engine.module.parameters()).dtype
    for buffer in engine.module.buffers():
        if buffer.is_floating_point():
            buffer.data = buffer.data.to(dtype)
    return engine, scheduler


def step_hyperbolic(optimizer, max_norm):
    """Riemannian Adam steps once per optimizer update, on gradients averaged over ranks (idempotent
    when DeepSpeed already reduced them) and clipped like the Euclidean ones."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
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
        optimizer = torch.optim.AdamW(model.euclidean_param_groups(args.weight_decay), lr=args.lr,
                                      betas=tuple(args.opt_betas))
        hyp_params = model.hyperbolic_parameters() if args.use_hyperbolic else []
        self.ds, _ = deepspeed_initialize(model, optimizer, deepspeed_config(args, total_updates, warmup_updates))
        for p in hyp_params:  # the geometry stays in float32 whatever DeepSpeed's precision
            p.data = p.data.float()
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
        the model's update counter (alpha's schedule)."""
        boundary = self.ds.is_gradient_accumulation_boundary()
        self.ds.backward(loss)
        if boundary and self.hyp_optimizer is not None:
            step_hyperbolic(self.hyp_optimizer, self.args.gradient_clipping)
        self.ds.step()
        if boundary:
            self.module.count_update()

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
        on rank 0; the resumable DeepSpeed state (optimizers, scheduler, RNG) in output_dir/deepspeed."""
        state = model_state_dict(self.ds)
        if utils.is_main_process():
            ckpt = {"model": state, "epoch": epoch, "args": vars(self.args), "max_accuracy": best,
                    "global_step": int(self.module.global_step)}
            last = os.path.join(output_dir, "checkpoint.pth")
            save_atomic(ckpt, last)
            if improved:
                link_atomic(last, os.path.join(output_dir, "best_checkpoint.pth"))
        ds_dir = os.path.join(output_dir, "deepspeed")
        client = {"epoch": epoch, "best": best, "rng": utils.gather_objects(utils.rng_state()),
                  "hyp_optimizer": self.hyp_optimizer.state_dict() if self.hyp_optimizer is not None else None}
        self.ds.save_checkpoint(ds_dir, tag=f"epoch{epoch}", client_state=client)
        if utils.is_main_process():  # keep only the newest resumable state: it holds the optimizer moments
            prune(ds_dir, keep=f"epoch{epoch}")

    def resume(self, output_dir):
        """Restore the state save() wrote; returns (first epoch to train, best dev score so far)."""
        ds_dir = os.path.join(output_dir, "deepspeed")
        path, client = self.ds.load_checkpoint(ds_dir)
        if path is None:
            utils.fail(f"--resume: no resumable state in {ds_dir}; start without --resume")
        if self.hyp_optimizer is not None:
            self.hyp_optimizer.load_state_dict(client["hyp_optimizer"])
        utils.set_rng_state(client["rng"][utils.rank()])
        print(f"Resumed from {path}: continuing at epoch {client['epoch'] + 1} (best dev score {client['best']})")
        return client["epoch"] + 1, client["best"]


def prune(ds_dir, keep):
    """Remove every epoch tag of ds_dir but `keep`."""
    for name in os.listdir(ds_dir):
        if name.startswith("epoch") and name != keep:
            shutil.rmtree(os.path.join(ds_dir, name), ignore_errors=True)


def model_state_dict(engine):
    """A plain fp32 CPU state dict of the whole model on rank 0 (None elsewhere), whatever the precision
    or ZeRO stage. Every rank must call it: under ZeRO-3 gathering the partitions is collective."""
    if engine.zero_optimization_stage() == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict() if utils.is_main_process() else None
    if not utils.is_main_process():
        return None
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def save_atomic(obj, path):
    """torch.save to a temporary file next to `path`, then rename: a crash never leaves half a file
    under `path`, and a failed save removes its temporary file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def link_atomic(src, dst):
    """Make `dst` the same file as `src` (a hard link: no second write of a multi-GB checkpoint), atomically.
    `src` is later replaced by os.replace, which gives it a new inode and leaves `dst` as it is."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    try:
        os.link(src, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)

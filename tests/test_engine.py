"""engine.py: DeepSpeed + Riemannian Adam on a tiny model in this process (one rank, CPU), and its
checkpoints: fp32 masters, safe resume, full disks, signals, node-local pruning."""
import errno
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
from types import SimpleNamespace

import geoopt
import pytest
import torch

import engine
import model_io
import utils
from train_config import TrainConfig
from conftest import cut_demo


class TinyModel(torch.nn.Module):
    """What Engine needs of Uni_Sign: Euclidean parameter groups, hyperbolic parameters, an update counter.
    The hyperbolic loss term depends on the ManifoldParameter alone, in float32, so its gradient does not
    depend on the Euclidean part's precision."""

    def __init__(self, hyperbolic=True, scalar=False):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.lin = torch.nn.Linear(8, 8)
        self.norm = torch.nn.BatchNorm1d(8)
        self.out = torch.nn.Linear(8, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
        self.register_buffer("global_step", torch.zeros((), dtype=torch.long))
        self.config = SimpleNamespace(use_hyperbolic=hyperbolic)
        if hyperbolic:
            self.ball = geoopt.PoincareBall(c=1.0)
            self.point = geoopt.ManifoldParameter(self.ball.expmap0(torch.randn(4, generator=generator) * 0.3),
                                                  manifold=self.ball)
        if hyperbolic and scalar:  # a 0-d parameter, as Uni_Sign's temperature, margin and curvature are
            self.log_scale = torch.nn.Parameter(torch.tensor(0.2))

    def forward(self, batch):
        x = batch["x"].to(self.lin.weight.dtype)
        loss = 1e-3 * self.out(self.norm(self.lin(x))).float().pow(2).mean()
        if hasattr(self, "point"):
            loss = loss + self.ball.dist0(self.point).pow(2)
        if hasattr(self, "log_scale"):
            loss = loss + self.log_scale.exp()
        return {"loss": loss}

    def euclidean_param_groups(self, weight_decay):
        return [{"params": [*self.lin.parameters(), *self.norm.parameters(), *self.out.parameters()],
                 "weight_decay": weight_decay}]

    def hyperbolic_parameters(self):
        return [self.point] + ([self.log_scale] if hasattr(self, "log_scale") else [])

    def count_update(self):
        self.global_step += 1


def make_args(**overrides):
    args = dict(batch_size=4, gradient_accumulation_steps=1, gradient_clipping=0.0, dtype="fp32", zero_stage=2,
                lr=1e-3, min_lr=1e-6, opt_betas=(0.9, 0.999), weight_decay=0.0, use_hyperbolic=True, hyp_lr=1e-2,
                hyp_dim=4, seed=0)
    args.update(overrides)
    return SimpleNamespace(**args)


def batch(scale=1.0, seed=1):
    return {"x": torch.randn(4, 8, generator=torch.Generator().manual_seed(seed)) * scale}


@pytest.fixture(scope="module", autouse=True)
def one_rank():
    utils.init_distributed()


def start(model, args):
    """The engine as fine_tuning.main builds it: the training settings, and the flags every checkpoint records."""
    return engine.Engine(model, TrainConfig.from_args(args), total_updates=10, warmup_updates=1, record=vars(args))


def build(scalar=False, **overrides):
    args = make_args(**overrides)
    return start(TinyModel(hyperbolic=args.use_hyperbolic, scalar=scalar), args)


def train(eng, steps=3):
    eng.train()
    for step in range(steps):
        eng.step(eng(batch(seed=step))["loss"])


def test_fp32_without_zero_clips_like_zero_2():
    """--zero_stage 0 under fp32: DeepSpeed's own clipping there takes every parameter of the module (the
    hyperbolic ones too, which Riemannian Adam clips itself) and fails on 0-d gradients; the Euclidean
    parameters are clipped as ZeRO-2 clips them, and both runs end with the same weights. The clipping
    threshold is small enough that AdamW's eps makes its update depend on how the gradients were scaled."""
    engines = [build(zero_stage=stage, gradient_clipping=1e-6, scalar=True) for stage in (0, 2)]
    for eng in engines:
        train(eng)
    zero0, zero2 = (dict(eng.module.named_parameters()) for eng in engines)
    for name, value in zero0.items():
        torch.testing.assert_close(value, zero2[name], rtol=1e-5, atol=1e-8, msg=name)


# ---------------------------------------------------------------------------- fp16, bf16

def test_fp16_riemannian_adam_sees_unscaled_gradients_and_skips_with_deepspeed(monkeypatch):
    # DeepSpeed refuses fp16 on CPUs without oneDNN fp16 kernels (many AMD ones); its loss scaling, the subject
    # here, is plain torch and runs on any CPU, so the test says the kernels are there.
    from deepspeed.accelerator import get_accelerator
    monkeypatch.setattr(get_accelerator(), "is_fp16_supported", lambda: True)
    reference = build(dtype="fp32")
    reference.step(reference(batch())["loss"])
    half = build(dtype="fp16")
    assert half.loss_scale() > 1000  # DeepSpeed scales the loss, and so the hyperbolic gradient
    half.step(half(batch())["loss"])
    assert half.ds.was_step_applied() and int(half.module.global_step) == 1
    point = half.module.point
    expected = reference.hyp_optimizer.state[reference.module.point]["exp_avg"]
    torch.testing.assert_close(half.hyp_optimizer.state[point]["exp_avg"], expected, rtol=1e-6, atol=0)

    # An fp16 overflow in the Euclidean gradients: DeepSpeed skips the update, and so does Riemannian Adam.
    before = point.detach().clone()
    half.step(half(batch(scale=1e8))["loss"])
    assert not half.ds.was_step_applied()
    torch.testing.assert_close(point.detach(), before, rtol=0, atol=0)
    assert point.grad is None and int(half.module.global_step) == 1
    half.step(half(batch())["loss"])  # and carries on
    assert half.ds.was_step_applied() and torch.isfinite(point).all() and not torch.equal(point.detach(), before)


def test_a_precision_the_accelerator_lacks_is_one_clear_line(monkeypatch, capsys):
    from deepspeed.accelerator import get_accelerator
    monkeypatch.setattr(get_accelerator(), "is_fp16_supported", lambda: False)
    with pytest.raises(SystemExit) as stop:
        utils.resolve_dtype("fp16")
    assert stop.value.code == 1
    assert capsys.readouterr().err == ("error: --dtype fp16: DeepSpeed finds no fp16 support on this machine's "
                                       f"{get_accelerator().device_name()} accelerator; use --dtype bf16 or --dtype fp32\n")
    monkeypatch.setattr(get_accelerator(), "is_fp16_supported", lambda: True)
    assert utils.resolve_dtype("fp16") == "fp16" and utils.resolve_dtype("fp32") == "fp32"
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_instructions_warns_that_it_is_slow(monkeypatch, capsys, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert utils.resolve_dtype("bf16") == "bf16"
    out = capsys.readouterr().out
    assert ("warning: --dtype bf16 on a CPU without bf16 instructions" in out) == (not native)


@pytest.mark.parametrize("name, capability, dtype, tflops", [
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16", 989.4), ("NVIDIA H100 PCIe", (9, 0), "bf16", 756.5),
    ("NVIDIA H100 NVL", (9, 0), "bf16", 835.5), ("NVIDIA H200", (9, 0), "bf16", 989.4),
    ("NVIDIA H200 NVL", (9, 0), "fp16", 835.5), ("NVIDIA A100-SXM4-80GB", (8, 0), "bf16", 312.0),
    ("NVIDIA A100-PCIE-40GB", (8, 0), "bf16", 312.0), ("NVIDIA L40S", (8, 9), "bf16", 362.0),
    ("NVIDIA L40", (8, 9), "bf16", 181.0), ("NVIDIA L4", (8, 9), "bf16", 121.0),
    ("Tesla V100-SXM2-32GB", (7, 0), "fp16", 125.0), ("Tesla V100-PCIE-16GB", (7, 0), "fp16", 112.0),
    ("Tesla V100-SXM2-32GB", (7, 0), "bf16", None), ("NVIDIA A10G", (8, 6), "bf16", None),
    ("NVIDIA H100 80GB HBM3", (9, 0), "fp32", None)])
def test_peak_flops_of_each_gpu_variant_or_none(monkeypatch, capsys, name, capability, dtype, tflops):
    """Names were matched by substring: H100 PCIe and H100/H200 NVL got the SXM peak, and V100 its fp16 peak
    under bf16, which it only emulates. An unknown peak is None, said once with why."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    utils.say_once.cache_clear()
    assert utils.peak_flops(dtype) == (tflops * 1e12 if tflops else None)
    said = capsys.readouterr().out
    assert ("model FLOPs utilisation is not reported" in said) == (tflops is None)
    if dtype == "bf16" and capability < (8, 0):
        assert "compute capability 7.0" in said and "no bf16 tensor cores" in said
    utils.peak_flops(dtype)
    assert capsys.readouterr().out == ""  # once


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_bf16_checkpoint_holds_the_fp32_master_weights(zero_stage):
    from deepspeed.utils import safe_get_full_fp32_param
    eng = build(dtype="bf16", zero_stage=zero_stage)
    train(eng)
    state = engine.model_state_dict(eng.ds)
    weight = state["lin.weight"]
    assert weight.dtype == torch.float32 and eng.module.lin.weight.dtype == torch.bfloat16
    assert not torch.equal(weight, weight.bfloat16().float())  # not merely the bf16 weights widened
    torch.testing.assert_close(weight.bfloat16(), eng.module.lin.weight.detach(), rtol=0, atol=0)
    if zero_stage == 2:
        torch.testing.assert_close(weight, safe_get_full_fp32_param(eng.module.lin.weight), rtol=0, atol=0)
    torch.testing.assert_close(state["point"], eng.module.point.detach(), rtol=0, atol=0)  # float32 already
    assert state["norm.running_mean"].dtype == torch.float32 and int(state["global_step"]) == 3


def test_zero3_checkpoint_gathers_the_whole_model():
    eng = build(zero_stage=3, use_hyperbolic=False)
    train(eng, steps=1)
    state = engine.model_state_dict(eng.ds)
    assert state["lin.weight"].shape == (8, 8) and state["out.bias"].shape == (1,)
    assert eng.module.lin.weight.numel() == 0  # partitioned again after the gather


def test_zero3_counts_the_flops_of_the_whole_weights(tiny_mt5_path):
    """ZeRO-3 partitions every parameter (numel 0 on each rank; DeepSpeed keeps the whole size in ds_numel and
    ds_shape), and the FLOP count, first computed during training, came out ~0: ~0 TFLOP/s and MFU."""
    from models import Uni_Sign
    settings = SimpleNamespace(mt5_path=tiny_mt5_path, use_hyperbolic=False)
    whole = Uni_Sign(settings)._flop_weight_counts
    model = Uni_Sign(settings)
    eng = start(model, make_args(zero_stage=3, use_hyperbolic=False))
    assert eng.module.pose_proj.weight.numel() == 0  # partitioned
    assert eng.module._flop_weight_counts == whole and min(whole.values()) > 0


def test_batchnorm_statistics_stay_float32_under_bf16():
    """BatchNorm's running statistics in bf16 (as the engine once cast them): with momentum 0.1 an update under half
    a unit in the last place vanishes, so a running mean of inputs averaging 10 stalls ~4 % short (measured here).
    The engine keeps them float32 under bf16 and reaches the float32 run's statistics."""
    stalled = torch.nn.BatchNorm1d(8).to(torch.bfloat16)
    inputs = [torch.randn(16, 8, generator=torch.Generator().manual_seed(i)) + 10 for i in range(100)]
    for x in inputs:
        stalled(x.to(torch.bfloat16))
    assert stalled.running_mean.float().mean() < 9.8  # stuck below 10 (bf16's spacing there is 0.0625)

    means = {}
    for dtype in ("fp32", "bf16"):
        eng = build(dtype=dtype, use_hyperbolic=False)
        with torch.no_grad():
            eng.module.lin.bias.fill_(10.0)  # the BatchNorm's inputs average ~10
            eng.module.lin.weight.mul_(0.1)
        eng.train()
        for x in inputs[:60]:
            eng({"x": x - 10})
        norm = eng.module.norm
        assert norm.running_mean.dtype == torch.float32 and int(norm.num_batches_tracked) == 60
        means[dtype] = norm.running_mean.clone()
    torch.testing.assert_close(means["bf16"], means["fp32"], rtol=2e-2, atol=0)


# ---------------------------------------------------------------------------- save and resume

def test_resume_restores_both_optimizers_and_the_counter(tmp_path):
    eng = build()
    train(eng)
    eng.save(str(tmp_path), epoch=0, best_score=1.5, is_best=True)
    train(eng, steps=1)
    after = {k: v.clone() for k, v in engine.model_state_dict(eng.ds).items()}

    again = build()
    assert again.resume(str(tmp_path)) == (1, 1.5)
    assert int(again.module.global_step) == 3
    train(again, steps=1)  # the same next update from the restored state
    for key, value in engine.model_state_dict(again.ds).items():
        torch.testing.assert_close(value, after[key], rtol=0, atol=0, msg=key)
    ckpt = torch.load(tmp_path / "best_checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["max_accuracy"] == 1.5


def scaled_tanh(x: torch.Tensor, k: torch.Tensor):
    """A function scripted as geoopt's and hyperbolic.py's are, whose gradients the JIT's optimised graph rounds
    differently from its first (profiling) call."""
    return (torch.tanh(x * k) / k).sum()


def test_scripted_functions_give_the_same_gradients_from_their_first_call():
    """The resumed runs of the hyperbolic branch drifted from uninterrupted ones (~2e-5 relative in train_pos_dist
    by the second epoch): TorchScript's executor profiles a scripted function's first call and then
    runs an optimised graph with its own autodiff, so a fresh process (the resumed one) computed its first steps'
    gradients of the geometry differently. After utils.set_seed every call computes the same ones."""
    previous = torch._C._get_graph_executor_optimize()
    try:
        utils.set_seed(0)
        function = torch.jit.script(scaled_tanh)  # a fresh executor: its first call is this test's
        k, x0 = torch.tensor(0.7, requires_grad=True), torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
        grads = []
        for _ in range(3):
            x = x0.clone().requires_grad_()
            function(x, k).backward()
            grads.append((x.grad, k.grad.clone()))
            k.grad = None
        for later in grads[1:]:
            assert all(torch.equal(a, b) for a, b in zip(later, grads[0]))
    finally:
        torch._C._set_graph_executor_optimize(previous)


class FakeGPU:
    """DeepSpeed's accelerator as a GPU's looks to engine.rng_state: a device generator of its own (a tensor),
    recording what it is set to; everything else is the real (CPU) accelerator's."""

    def __init__(self, real, state):
        self.real, self.state, self.restored = real, state, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def device_name(self, device_index=None):
        return "cuda"

    def get_rng_state(self, device_index=None):
        return self.state.clone()

    def set_rng_state(self, new_state, device_index=None):
        self.restored.append(new_state.clone())


def test_resume_restores_the_accelerators_random_generator(tmp_path, monkeypatch, capsys):
    """On a GPU mT5's dropout draws from the device's generator, which a resumed run re-seeded: dropout replayed
    the masks of the run's first epochs. It is saved through DeepSpeed's accelerator API and restored; a state
    saved without it (before it was kept) still resumes, saying that dropout draws differ."""
    import deepspeed.accelerator
    from deepspeed.accelerator import get_accelerator
    eng = build()
    (tmp_path / "old").mkdir(), (tmp_path / "new").mkdir()
    eng.save(str(tmp_path / "old"), epoch=0, best_score=1.0, is_best=True)  # on the CPU: no device generator
    gpu = FakeGPU(get_accelerator(), torch.arange(16, dtype=torch.uint8))
    monkeypatch.setattr(deepspeed.accelerator, "get_accelerator", lambda: gpu)
    eng.save(str(tmp_path / "new"), epoch=0, best_score=1.0, is_best=True)
    saved = engine.load_trusted(tmp_path / "new" / "deepspeed" / "epoch0" / "mp_rank_00_model_states.pt")
    assert torch.equal(saved["rng"][0]["accelerator"]["state"], gpu.state)

    gpu.state = torch.zeros(16, dtype=torch.uint8)  # the resumed process's generator, seeded afresh
    assert build().resume(str(tmp_path / "new")) == (1, 1.0)
    assert len(gpu.restored) == 1 and torch.equal(gpu.restored[0], torch.arange(16, dtype=torch.uint8))
    assert build().resume(str(tmp_path / "old")) == (1, 1.0) and len(gpu.restored) == 1
    assert "holds no cuda random generator" in capsys.readouterr().out


class Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # runs on unpickling: creates the marker file


@pytest.mark.parametrize("victim", ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_planted_pickle_in_the_resumable_state_is_refused(tmp_path, victim):
    eng = build()
    train(eng, steps=1)
    eng.save(str(tmp_path), epoch=0, best_score=1.0, is_best=True)
    path = tmp_path / "deepspeed" / "epoch0" / victim
    assert path.is_file()
    marker = tmp_path / "marker"
    torch.save({"module": Planted(str(marker))}, path)  # zip format, like the real file
    with pytest.raises(engine.CheckpointError) as refused:  # fine_tuning.run prints it as one error line
        build().resume(str(tmp_path))
    err = str(refused.value)
    assert err.startswith("--resume: refusing") and str(path) in err and len(err.strip().splitlines()) == 1
    assert "Unsupported global: GLOBAL io.open" in err and "weights_only" not in err  # what, not torch's advice
    assert not marker.exists()
    with open(path, "wb") as f:  # and a plain pickle
        pickle.dump(Planted(str(marker)), f)
    with pytest.raises(engine.CheckpointError, match="refusing " + re.escape(str(path))):
        build().resume(str(tmp_path))
    assert not marker.exists()


def test_resume_with_another_model_names_the_flags(tmp_path):
    eng = build()
    eng.save(str(tmp_path), epoch=0, best_score=1.0, is_best=True)
    with pytest.raises(engine.CheckpointError) as refused:
        build(use_hyperbolic=False).resume(str(tmp_path))
    err = str(refused.value)
    assert "another model" in err and "--use_hyperbolic True (now False)" in err


def test_resume_without_a_complete_deepspeed_state_says_so(tmp_path):
    eng = build()
    eng.save(str(tmp_path), epoch=0, best_score=1.0, is_best=True)
    os.remove(tmp_path / "deepspeed" / "latest")  # as when killed during the first DeepSpeed save
    with pytest.raises(engine.CheckpointError) as refused:
        build().resume(str(tmp_path))
    err = str(refused.value)
    assert "no complete resumable state" in err and f"--finetune {tmp_path / 'checkpoint.pth'}" in err
    os.remove(tmp_path / "checkpoint.pth")
    with pytest.raises(engine.CheckpointError, match="no resumable state in .*; start without --resume"):
        build().resume(str(tmp_path))


def test_save_keeps_only_the_newest_state_and_an_atomic_latest(tmp_path):
    eng = build()
    for epoch in range(3):
        eng.save(str(tmp_path), epoch=epoch, best_score=1.0, is_best=epoch == 0)
    ds_dir = tmp_path / "deepspeed"
    assert sorted(name for name in os.listdir(ds_dir) if name.startswith("epoch")) == ["epoch2"]
    assert (ds_dir / "latest").read_text() == "epoch2"
    assert not [name for name in os.listdir(ds_dir) if ".tmp-" in name]
    assert torch.load(tmp_path / "best_checkpoint.pth", weights_only=True)["epoch"] == 0


def test_commit_prunes_the_old_tags_of_its_own_folder(tmp_path):
    """Each node's local rank 0 commits in its own folder (nodes whose shards live on their own disks)."""
    for node in ("node0", "node1"):
        for tag in ("epoch0", "epoch1"):
            os.makedirs(tmp_path / node / tag)
            (tmp_path / node / tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"x")
        (tmp_path / node / "latest").write_text("epoch0")
        engine.commit(str(tmp_path / node), "epoch1")
        assert sorted(os.listdir(tmp_path / node)) == ["epoch1", "latest"]
        assert (tmp_path / node / "latest").read_text() == "epoch1"


# ---------------------------------------------------------------------------- full disk, signals

def test_full_disk_names_the_file_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pth")
    model_io.save_atomic({"epoch": 0}, path)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_io.torch, "save", full_disk)
    with pytest.raises(model_io.CheckpointError, match="disk is full") as info:
        model_io.save_atomic({"epoch": 1}, path)
    assert path in str(info.value)
    monkeypatch.setattr(model_io.torch, "save", real_save)
    assert torch.load(path, weights_only=True) == {"epoch": 0}
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def test_full_disk_during_the_deepspeed_save_keeps_the_previous_state(tmp_path, monkeypatch):
    eng = build()
    eng.save(str(tmp_path), epoch=0, best_score=1.0, is_best=True)
    real_save = torch.save

    def full_disk_for_deepspeed(obj, f, *args, **kwargs):
        if isinstance(f, str) and os.sep + "deepspeed" + os.sep in f:
            open(f, "wb").close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_for_deepspeed)
    with pytest.raises(model_io.CheckpointError, match="disk is full"):
        eng.save(str(tmp_path), epoch=1, best_score=1.0, is_best=False)
    monkeypatch.setattr(torch, "save", real_save)
    ds_dir = tmp_path / "deepspeed"
    assert sorted(n for n in os.listdir(ds_dir) if n.startswith(("epoch", "latest"))) == ["epoch0", "latest"]
    assert (ds_dir / "latest").read_text() == "epoch0"
    assert build().resume(str(tmp_path))[0] == 1


def test_sigterm_while_saving_removes_the_temporary_file(tmp_path, monkeypatch):
    eng = build()
    eng.save(str(tmp_path), epoch=0, best_score=1.0, is_best=True)
    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the file is still a temporary one
        for _ in range(1000):  # the handler runs between bytecodes
            pass

    monkeypatch.setattr(model_io.torch, "save", interrupted)
    with pytest.raises(engine.Stopped, match="SIGTERM"), engine.stop_on_signals():
        eng.save(str(tmp_path), epoch=1, best_score=1.0, is_best=False)
    monkeypatch.setattr(model_io.torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["best_checkpoint.pth", "checkpoint.pth", "deepspeed"]
    assert torch.load(tmp_path / "checkpoint.pth", weights_only=True)["epoch"] == 0
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored after the block


def dead_pid():
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("resume", [False, True])
def test_start_removes_what_killed_runs_left_half_written_and_nothing_else(tmp_path, capsys, resume):
    """kill -9 while checkpoint.pth was written left checkpoint.pth.tmp-<pid> (as large as the checkpoint) through
    every later resume. A run starting in the folder removes our temporaries of dead processes, and keeps those
    of live processes, of other hosts and anything not named as ours."""
    import preflight
    dead, host = dead_pid(), socket.gethostname()
    stale = [f"checkpoint.pth.tmp-{dead}", f"best_checkpoint.pth.tmp-{dead}", f"log.txt.tmp-{dead}"]
    kept = [f"checkpoint.pth.tmp-{os.getpid()}", f"checkpoint.pth.tmp-{dead}.bak", f"notes.tmp-{dead}",
            "dev_tmp_pres.txt"]
    if resume:  # a run's folder: its resumable state, and commit()'s temporary `latest`
        (tmp_path / "deepspeed").mkdir()
        stale.append(f"deepspeed/latest.tmp-{host}-{dead}")
        kept += ["checkpoint.pth", f"deepspeed/latest.tmp-other-{host}-{dead}"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"half")
    preflight.check_output_dir(SimpleNamespace(output_dir=str(tmp_path), eval=False, resume=resume, overwrite=False))
    left = {os.path.relpath(os.path.join(folder, name), tmp_path) for folder, _, names in os.walk(tmp_path)
            for name in names}
    assert left == set(kept)
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and f"removed {len(stale)} temporary file(s)" in out
    assert all(str(tmp_path / name) in out for name in stale)


# ---------------------------------------------------------------------------- end to end (fine_tuning.py)

from e2e import base_args, check_ok, read_log, read_predictions, run, start_ranks  # noqa: E402

STOP_AT = """
import os, signal, sys, models, fine_tuning
forward = models.Uni_Sign.forward
calls = []
def stop_at(self, batch):
    if self.training:
        calls.append(1)
        if len(calls) == {call}:  # as a cluster's scheduler (SIGTERM) or the kernel (SIGKILL) would, at a known step
            os.kill(os.getpid(), signal.{signal})
    return forward(self, batch)
models.Uni_Sign.forward = stop_at
fine_tuning.run(fine_tuning.get_args_parser().parse_args(sys.argv[1:]))
"""
TIMING = ("epoch_time_s", "train_samples_per_s", "train_tflops", "train_mfu")


def stop_at(call, signal_name="SIGTERM"):
    """A `python -c` script running fine_tuning.py that sends itself `signal_name` at its `call`-th training step."""
    return STOP_AT.format(call=call, signal=signal_name)


def no_temporary_files(folder):
    return not [name for _, _, names in os.walk(folder) for name in names if ".tmp-" in name]


@pytest.fixture(scope="module")
def resume_demo(small_demo, tmp_path_factory):
    """small_demo with dev and test cut to 4 samples: every epoch of these runs beam-searches both, and what is
    compared is the training state (and the predictions, line for line), not how good the scores are."""
    return cut_demo(small_demo, tmp_path_factory.mktemp("resume_demo"), 4)


def assert_same_run(whole, parts, epochs):
    """The resumed run in `parts` logged every epoch's values as the uninterrupted one in `whole` did, bit for bit
    (timings aside), wrote the same last translations and ends with the same weights."""
    logs = read_log(whole), read_log(parts)
    assert [r["epoch"] for r in logs[0]] == [r["epoch"] for r in logs[1]] == list(range(epochs))
    for a, b in zip(*logs):
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    for split in ("dev", "test"):  # the last epoch's translations, line for line
        lines = read_predictions(whole / f"{split}_tmp_pres.txt")
        assert len(lines) == 4 and lines == read_predictions(parts / f"{split}_tmp_pres.txt")
    weights = [torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True) for out in (whole, parts)]
    assert weights[0]["global_step"] == weights[1]["global_step"] == 2 * epochs
    assert weights[0]["model"].keys() == weights[1]["model"].keys()
    for key, value in weights[0]["model"].items():
        assert torch.equal(value, weights[1]["model"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, workers", [("SIGTERM", 2), ("SIGKILL", 0)])
def test_stopped_then_resumed_run_equals_an_uninterrupted_one(resume_demo, tmp_path, signal_name, workers):
    """Stopped at epoch 1's first step, resumed, with the hyperbolic branch: the two epochs after the resume log
    what an uninterrupted run logs, bit for bit, and the last weights are the same. What made them differ: the
    persistent dev/test loaders drew their workers' seed from the global generator when they first started (epoch
    0 in one run, the resumed epoch in the other), and TorchScript optimised the geometry's
    scripted functions after their first calls, which the resumed process made again."""
    def args(out):
        return base_args(resume_demo, out, epochs=3, steps=2) + ["--num_workers", str(workers)]
    check_ok(run([sys.executable, "fine_tuning.py", *args(tmp_path / "whole")]))
    stopped = run([sys.executable, "-c", stop_at(3, signal_name), *args(tmp_path / "parts")])  # epoch 1, step 0
    if signal_name == "SIGTERM":
        assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
        assert "stopped by SIGTERM: epoch 0 is the last resumable one" in stopped.stderr
        assert "--resume" in stopped.stderr and "Traceback" not in stopped.stderr
        assert no_temporary_files(tmp_path / "parts")
    else:
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-2000:]
    assert [r["epoch"] for r in read_log(tmp_path / "parts")] == [0]
    resumed = check_ok(run([sys.executable, "fine_tuning.py", *args(tmp_path / "parts"), "--resume"]))
    assert "continuing at epoch 1" in resumed.stdout
    assert_same_run(tmp_path / "whole", tmp_path / "parts", epochs=3)
    if workers == 0:  # a finished run says so, and trains nothing
        finished = check_ok(run([sys.executable, "fine_tuning.py", *args(tmp_path / "parts"), "--resume"]))
        assert "has finished its 3 epochs, so there is nothing to train; pass a larger --epochs" in finished.stdout
        assert len(read_log(tmp_path / "parts")) == 3


def launch_nodes(script, args_per_rank):
    """One process per "node" (LOCAL_RANK 0 on each), started as a cluster starts them, with gloo on CPU."""
    procs = start_ranks([[sys.executable, "-c", script, *args] for args in args_per_rank], one_node=False)
    return [(proc.wait(timeout=900), *proc.communicate()) for proc in procs]


def epoch_tags(output_dir):
    ds_dir = output_dir / "deepspeed"
    return sorted(n for n in os.listdir(ds_dir) if n.startswith("epoch")), (ds_dir / "latest").read_text()


@pytest.mark.slow
def test_resume_on_another_number_of_ranks_and_pruning_on_each_node(resume_demo, tmp_path):
    """1 rank -> 2 ranks on two "nodes", each writing its shards to its own folder -> 1 rank. The epoch,
    alpha's update counter, the best score and the schedule continue; each node prunes its own folder."""
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    args = lambda out: base_args(resume_demo, out, epochs=3, steps=2)  # noqa: E731
    stopped = run([sys.executable, "-c", stop_at(3), *args(node0)])  # stops in epoch 1
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    shutil.copytree(node0, node1)  # the second node's copy of the run

    results = launch_nodes(stop_at(3), [args(node0) + ["--resume"], args(node1) + ["--resume"]])
    for code, out, err in results:
        assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "saved by 1 ranks and this run has 2" in results[0][1] and "AdamW's moments restart" in results[0][1]
    assert [r["epoch"] for r in read_log(node0)] == [0, 1]
    assert epoch_tags(node0) == (["epoch1"], "epoch1") and epoch_tags(node1) == (["epoch1"], "epoch1")
    assert os.path.isfile(node1 / "deepspeed" / "epoch1" / "zero_pp_rank_1_mp_rank_00_optim_states.pt")

    resumed = check_ok(run([sys.executable, "fine_tuning.py", *args(node0), "--resume"]))
    assert "saved by 2 ranks and this run has 1" in resumed.stdout
    log = read_log(node0)
    assert [r["epoch"] for r in log] == [0, 1, 2]
    assert log[-1]["best_dev_bleu4"] == max(r["dev_bleu4"] for r in log)
    ckpt = torch.load(node0 / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 6  # 2 updates per epoch in every shape


def test_collectives_use_the_backends_device(monkeypatch):
    """NCCL takes only GPU tensors, gloo only host tensors: utils.comm_device says which (all_ranks_true and
    the start-up broadcast use it)."""
    monkeypatch.setattr(utils, "device", lambda: torch.device("meta"))
    monkeypatch.setattr(torch.distributed, "get_backend", lambda *a: "nccl")
    assert utils.comm_device() == torch.device("meta")
    monkeypatch.setattr(torch.distributed, "get_backend", lambda *a: "gloo")
    assert utils.comm_device() == torch.device("cpu")


def test_start_up_broadcast_of_the_scalars_works_under_nccl(monkeypatch):
    """Multi-GPU Geo-Sign died at start-up: the 0-d parameters were broadcast while the module was still in
    host memory, which NCCL refuses. Recorded here with an NCCL stand-in whose device is `meta`: every
    broadcast tensor must be on the communication device, and all before DeepSpeed's initialize."""
    events = []

    def nccl_broadcast(tensor, src, **kwargs):
        if tensor.device.type == "cpu":
            raise RuntimeError("No backend type associated with device type cpu")
        events.append(("broadcast", tensor.device.type, src))

    def initialize(model, optimizer, config):
        events.append(("initialize",))
        raise RuntimeError("stop here")

    import deepspeed
    monkeypatch.setattr(utils, "world_size", lambda: 2)
    monkeypatch.setattr(utils, "comm_device", lambda: torch.device("meta"))
    monkeypatch.setattr(torch.distributed, "broadcast", nccl_broadcast)
    monkeypatch.setattr(deepspeed, "initialize", initialize)
    model = TinyModel(scalar=True)
    with pytest.raises(RuntimeError, match="stop here"):
        engine.deepspeed_initialize(model, None, {})
    scalars = [p for p in model.parameters() if p.dim() == 0]  # log_scale and the ball's curvature
    assert len(scalars) == 2
    assert events == [("broadcast", "meta", 0)] * len(scalars) + [("initialize",)]
    assert model.log_scale.device.type == "meta"
    assert not hasattr(model.log_scale, "ds_optim_param")  # unmarked again after DeepSpeed's initialize

"""Speed changes keep the model's numerics: the faster pose encoder against the unchanged computation
(losses, every gradient, BatchNorm running statistics, beam search), and the speed benchmarks run."""
import copy
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import models
import stgcn_layers
from bench_hyperbolic import random_batch
from stgcn_layers import BODY_ANCHOR, PARTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reference_encode_parts(pose, proj_linear, gcn_modules, fusion_gcn_modules):
    """encode_parts as main had it at 6d4f403 (and the release computes it): one call per part, so the
    shared hand modules run twice and each hand's BatchNorms see only that hand."""
    spatial = {}
    for part in PARTS:
        x = proj_linear[part](pose[part]).permute(0, 3, 1, 2)
        spatial[part] = gcn_modules[part](x.contiguous())
    body = spatial["body"].detach()
    features = {}
    for part in PARTS:
        x = spatial[part]
        if part in BODY_ANCHOR:
            x = x + body[..., BODY_ANCHOR[part]].unsqueeze(-1)
        features[part] = fusion_gcn_modules[part](x).mean(dim=-1).transpose(1, 2)
    return features


def build_model(mt5_path, hyperbolic):
    torch.manual_seed(0)
    flags = dict(mt5_path=mt5_path, use_hyperbolic=hyperbolic, hyp_text_cmp="token", hyp_text_emb_src="decoder")
    return models.Uni_Sign(SimpleNamespace(**flags)).train()


def training_pass(model, batch, encoder, monkeypatch, dtype=torch.float32):
    """Loss, gradients and buffers (float64) of one forward + backward of a copy of `model` with `encoder`."""
    monkeypatch.setattr(models, "encode_parts", encoder)
    model = copy.deepcopy(model).to(dtype)
    torch.manual_seed(1)  # the same mT5 dropout masks in every pass
    loss = model(batch)["loss"]
    loss.backward()
    grads = {name: p.grad.double() for name, p in model.named_parameters() if p.grad is not None}
    buffers = {name: b.double() for name, b in model.named_buffers()}
    return loss.item(), grads, buffers


def numerics_gaps(model, batch, monkeypatch):
    """How far the new encoder's float32 pass is from the unchanged float32 one, in units of the unchanged
    one's own float32 round-off (both measured against the unchanged computation in float64)."""
    old_loss, old_grads, old_buffers = training_pass(model, batch, reference_encode_parts, monkeypatch)
    new_loss, new_grads, new_buffers = training_pass(model, batch, stgcn_layers.encode_parts, monkeypatch)
    _, exact_grads, _ = training_pass(model, batch, reference_encode_parts, monkeypatch, torch.float64)
    scale = max(g.abs().max().item() for g in exact_grads.values())
    assert set(new_grads) == set(old_grads) and len(old_grads) > 100
    worst = 0.0
    for name, exact in exact_grads.items():
        old_error = (old_grads[name] - exact).abs().max().item()
        new_error = (new_grads[name] - exact).abs().max().item()
        # Biases in front of a BatchNorm have gradient 0 in exact arithmetic: only round-off is left there,
        # hence the floor of 1e-7 of the largest gradient.
        worst = max(worst, new_error / (old_error + 1e-7 * scale))
    buffer_gap = max((new_buffers[n] - old_buffers[n]).abs().max().item() / (old_buffers[n].abs().max().item() + 1e-12)
                     for n in old_buffers)
    return abs(new_loss - old_loss) / abs(old_loss), worst, buffer_gap


@pytest.mark.parametrize("hyperbolic", [False, True], ids=["pose_only", "token_mode"])
def test_batched_hands_keep_losses_gradients_and_running_stats(tiny_mt5_path, monkeypatch, hyperbolic):
    model = build_model(tiny_mt5_path, hyperbolic)
    batch = random_batch(model.mt5_tokenizer, 3, 12, 8)
    loss_gap, gradient_gap, buffer_gap = numerics_gaps(model, batch, monkeypatch)
    assert loss_gap < 1e-6
    assert gradient_gap < 3.0  # within a few times the unchanged computation's own float32 round-off
    assert buffer_gap < 1e-6   # running means/variances and num_batches_tracked (two updates per hand layer)


def test_the_numerics_check_catches_shared_hand_statistics(tiny_mt5_path, monkeypatch):
    """The check above can fail: normalising both hands with joint batch statistics (the tempting shortcut)
    changes the gradients far beyond round-off and the running statistics."""
    model = build_model(tiny_mt5_path, False)
    batch = random_batch(model.mt5_tokenizer, 3, 12, 8)
    real = stgcn_layers.batch_norm_groups
    monkeypatch.setattr(stgcn_layers, "batch_norm_groups", lambda bn, x, groups: real(bn, x, 1))
    _, gradient_gap, buffer_gap = numerics_gaps(model, batch, monkeypatch)
    assert gradient_gap > 100 and buffer_gap > 1e-3


def test_batched_hands_keep_beam_search(tiny_mt5_path, monkeypatch):
    model = build_model(tiny_mt5_path, True)
    # Running statistics from a few training passes, so that evaluation does not just see the initial ones.
    with torch.no_grad():
        for seed in range(3):
            model(random_batch(model.mt5_tokenizer, 4, 12, 8, seed=seed))
    model.eval()
    batch = random_batch(model.mt5_tokenizer, 4, 12, 8, seed=5)
    monkeypatch.setattr(models, "encode_parts", reference_encode_parts)
    old = model.generate(batch, num_beams=3, max_new_tokens=12)
    monkeypatch.setattr(models, "encode_parts", stgcn_layers.encode_parts)
    new = model.generate(batch, num_beams=3, max_new_tokens=12)
    assert new == old and any(old)


def run_benchmark(*argv, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                            "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "script", "benchmark.py"), *argv], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_step_benchmark_runs_tiny():
    """Working tree against HEAD in a temporary git worktree, both modes (a few child processes)."""
    stdout, summary = run_benchmark("step", "--baseline", "HEAD", "--tiny")
    assert set(summary) == {"ratio", "pose", "token"}
    for mode in ("pose", "token"):
        assert summary[mode]["baseline_ms"] > 0 and summary[mode]["work_ms"] > 0
        assert summary[mode]["ratio"] == pytest.approx(summary[mode]["baseline_ms"] / summary[mode]["work_ms"], rel=1e-3)
    assert summary["ratio"] == min(summary["pose"]["ratio"], summary["token"]["ratio"])
    assert "working tree" in stdout


@pytest.mark.slow
def test_gpu_benchmark_runs_tiny_on_cpu():
    """The GPU benchmark's whole path (random mT5 saved and loaded, DeepSpeed ZeRO-2, both modes) at tiny size."""
    stdout, summary = run_benchmark("gpu", "--tiny")
    configs = summary["configs"]
    assert set(configs) == {"pose", "token"}
    for config in configs.values():
        assert config["ms_per_step"] > 0 and config["flops_per_step"] > 0 and config["peak_memory_gib"] > 0
        assert config["samples_per_s"] == pytest.approx(2 * 1000 / config["ms_per_step"], rel=1e-2)
        assert config["tflops"] == pytest.approx(config["flops_per_step"] / config["ms_per_step"] / 1e9, rel=1e-2, abs=1e-4)
    assert summary["token_over_pose"] == pytest.approx(configs["token"]["ms_per_step"] / configs["pose"]["ms_per_step"],
                                                       rel=1e-3)
    assert "token-mode / pose-only step" in stdout

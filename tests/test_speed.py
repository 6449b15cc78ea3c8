"""The speed benchmarks run (tiny sizes): the training step against a git revision, and the GPU benchmark's
whole path on CPU."""
import json
import os
import sys

import pytest

import e2e


def run_benchmark(*argv, timeout=900):
    result = e2e.run([sys.executable, os.path.join("script", "benchmark.py"), *argv], timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_step_benchmark_runs_tiny():
    """Working tree against HEAD in a temporary git worktree: one timing process per tree, token mode only (the
    mode with both optimizers and the hyperbolic branch; pose-only training is timed the same way)."""
    stdout, summary = run_benchmark("step", "--baseline", "HEAD", "--tiny", "--modes", "token")
    assert set(summary) == {"ratio", "token"}
    token = summary["token"]
    assert token["baseline_ms"] > 0 and token["work_ms"] > 0 and token["baseline_cpu_ms"] > 0 and token["work_cpu_ms"] > 0
    assert token["ratio"] == pytest.approx(token["baseline_ms"] / token["work_ms"], rel=1e-3)
    assert token["cpu_ratio"] == pytest.approx(token["baseline_cpu_ms"] / token["work_cpu_ms"], rel=1e-3)
    assert summary["ratio"] == token["ratio"]
    assert "working tree" in stdout and "round 1/1 token" in stdout


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


@pytest.mark.slow
def test_compiled_pose_encoder_keeps_keys_and_outputs(tiny_mt5_path):
    """fine_tuning.py --compile: encode_pose under torch.compile gives the eager outputs (to round-off), and
    the state dict's names do not change."""
    from types import SimpleNamespace

    import torch

    import models
    from bench_hyperbolic import random_batch
    torch.manual_seed(0)
    model = models.Uni_Sign(SimpleNamespace(mt5_path=tiny_mt5_path)).eval()
    batch = random_batch(model.mt5_tokenizer, 2, 6, 6)
    keys = list(model.state_dict())
    with torch.no_grad():
        eager = model.encode_pose(batch)[0]
        model.compile_pose_encoder()
        compiled = model.encode_pose(batch)[0]
    assert list(model.state_dict()) == keys
    assert torch.allclose(compiled, eager, atol=1e-5, rtol=1e-4)


def test_convolution_benchmark_runs_tiny(capsys):
    """benchmark.py convs: each encoder convolution shape timed as nn.Conv2d and as a matrix product, in process."""
    import bench_convs
    bench_convs.main(["--tiny"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["mm_gflops"] > 0 and len(summary["convs"]) == len(bench_convs.SHAPES)
    assert all(r["conv_gflops"] > 0 and r["matmul_gflops"] > 0 for r in summary["convs"])
    assert summary["ratio"] == max(r["ratio"] for r in summary["convs"])


@pytest.mark.parametrize("kernel", [1, 5])
def test_convolution_as_a_matrix_product_matches_conv2d_with_gradients(kernel):
    """The benchmark's matrix-product form computes what nn.Conv2d computes (forward and every gradient)."""
    import torch

    import bench_convs
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, (kernel, 1), padding=((kernel - 1) // 2, 0)).double()
    x = torch.randn(2, 6, 7, 3, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 5, 7, 3, dtype=torch.float64)
    wanted = [x, conv.weight, conv.bias]
    expected = torch.autograd.grad(conv(x), wanted, grad_out)
    got = torch.autograd.grad(bench_convs.conv_as_matmul(x, conv.weight, conv.bias), wanted, grad_out)
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-10)


@pytest.mark.slow
def test_whole_run_benchmark_runs_one_round():
    """benchmark.py run: one short fine_tuning.py run per tree (working tree, HEAD in a temporary worktree)."""
    _, summary = run_benchmark("run", "--baseline", "HEAD", "--rounds", "1")
    assert summary["baseline_s"] > 0 and summary["work_s"] > 0
    assert summary["ratio"] == pytest.approx(summary["baseline_s"] / summary["work_s"], rel=1e-2)

"""The speed benchmarks run (tiny sizes): the training step against a git revision, and the GPU benchmark's
whole path on CPU."""
import json
import os
import sys

import pytest

import e2e
from losses import training_loss


def run_benchmark(*argv, timeout=900):
    """benchmark.py's command line in a process of its own. The timing processes it starts take --threads (default
    2): the tests pass e2e.THREADS, the cores their pytest-xdist worker has (more threads than cores spin)."""
    result = e2e.run([sys.executable, os.path.join("script", "benchmark.py"), *argv], timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_step_benchmark_runs_tiny():
    """Working tree against HEAD in a temporary git worktree: one timing process per tree, token mode only (the
    mode with both optimizers and the hyperbolic branch; pose-only training is timed the same way)."""
    stdout, summary = run_benchmark("step", "--baseline", "HEAD", "--tiny", "--modes", "token", "--threads", str(e2e.THREADS))
    assert set(summary) == {"ratio", "token"}
    assert set(summary["token"]) == {"baseline_ms", "work_ms", "ratio", "paired_ratio", "baseline_cpu_ms",
                                     "work_cpu_ms", "cpu_ratio"}
    assert summary["ratio"] == summary["token"]["ratio"]  # the smaller of the modes' ratios: here the one mode's
    assert "working tree" in stdout and "round 1/1 token" in stdout


def test_side_by_side_summarises_known_round_times():
    """The step and run benchmarks' comparison of two trees, on times chosen by hand: medians, the ratio of the
    medians (baseline / work), the median of the rounds' own ratios, the CPU-time ratio, rounded as reported."""
    from bench.common import side_by_side
    wall = {"baseline": [30.0, 10.0, 20.0], "work": [12.0, 10.0, 40.0]}  # rounds' ratios 2.5, 1.0, 0.5
    cpu = {"baseline": [9.0, 3.0, 6.0], "work": [2.0, 8.0, 4.0]}
    assert side_by_side(wall, cpu, "ms") == {
        "baseline_ms": 20.0, "work_ms": 12.0, "ratio": 1.6667, "paired_ratio": 1.0,
        "baseline_cpu_ms": 6.0, "work_cpu_ms": 4.0, "cpu_ratio": 1.5}
    assert set(side_by_side(wall, cpu, "s")) == {"baseline_s", "work_s", "ratio", "paired_ratio", "baseline_cpu_s",
                                                 "work_cpu_s", "cpu_ratio"}


@pytest.mark.slow
def test_gpu_benchmark_runs_tiny_on_cpu():
    """The GPU benchmark's whole path (random mT5 saved and loaded, DeepSpeed ZeRO-2, both modes) at tiny size."""
    stdout, summary = run_benchmark("gpu", "--tiny")
    configs = summary["configs"]
    assert set(configs) == {"pose", "token"}
    for config in configs.values():
        assert {"ms_per_step", "samples_per_s", "tflops", "mfu", "peak_memory_gib", "flops_per_step"} <= set(config)
    # one batch for both (Uni_Sign.training_flops leaves the hyperbolic branch out)
    assert configs["token"]["flops_per_step"] == configs["pose"]["flops_per_step"]
    assert "token-mode / pose-only step" in stdout


def test_gpu_benchmark_rates_from_known_step_times():
    """The GPU benchmark's figures on inputs chosen by hand: a 0.25 s step of 8 samples and 2e12 FLOPs on a
    1e13 FLOP/s peak is 250 ms, 32 samples/s, 8 TFLOP/s and MFU 0.8; configurations compare by step time."""
    from bench import gpu as bench_gpu
    assert bench_gpu.step_rates(0.25, 8, 2e12, 1e13) == {"ms_per_step": 250.0, "samples_per_s": 32.0,
                                                          "tflops": 8.0, "mfu": 0.8}
    assert bench_gpu.step_rates(0.25, 8, 2e12, None)["mfu"] is None
    configs = {"pose": {"ms_per_step": 40.0}, "token": {"ms_per_step": 50.0}}
    assert bench_gpu.step_ratio(configs, "token", "pose") == 1.25


def demo_batches(demo_root, tokenizer):
    """Two dev batches from the real collator: other samples (names), other sizes, other lengths."""
    from types import SimpleNamespace

    import datasets
    args = SimpleNamespace(max_length=256, task="SLT", skip_bad_samples=False)
    dataset = datasets.build_dataset("Demo", "dev", args, label_path=demo_root["label_paths"]["dev"],
                                     pose_dir=demo_root["pose_dir"])
    collate = datasets.PoseCollator(tokenizer, "Demo")
    batches = [collate([dataset[i] for i in range(2)]), collate([dataset[i] for i in range(2, 5)])]
    assert batches[0]["pose_mask"].shape[1] != batches[1]["pose_mask"].shape[1]
    return batches


def build_model(mt5_path):
    from types import SimpleNamespace

    import torch

    import models
    torch.manual_seed(0)
    return models.Uni_Sign(SimpleNamespace(mt5_path=mt5_path, use_hyperbolic=True, hyp_text_cmp="token",
                                           hyp_text_emb_src="decoder"))


@pytest.mark.slow
def test_compiled_pose_encoder_keeps_keys_and_outputs(demo_root, tiny_mt5_path):
    """fine_tuning.py --compile (inductor): encode_pose gives the eager outputs (to round-off), one graph
    serves batches of other samples, sizes and lengths, and the state dict's names do not change."""
    import torch

    import models
    model = build_model(tiny_mt5_path).eval()
    batches = demo_batches(demo_root, model.mt5_tokenizer)
    keys = list(model.state_dict())
    with torch.no_grad():
        eager = [model.encode_pose(batch) for batch in batches]
        model.compile_pose_encoder()
        compiled = [model.encode_pose(batches[0])]
        with torch._dynamo.config.patch(error_on_recompile=True):
            compiled.append(model.encode_pose(batches[1]))
    assert list(model.state_dict()) == keys
    for e, c in zip(eager, compiled):
        assert c[0].shape == e[0].shape and torch.allclose(c[0], e[0], atol=1e-5, rtol=1e-4)
        assert torch.equal(c[1], e[1])
        assert all(torch.allclose(c[2][part], e[2][part], atol=1e-5, rtol=1e-4) for part in models.PARTS)


@pytest.mark.slow
def test_compiled_training_steps_match_eager_on_one_graph(demo_root, tiny_mt5_path):
    """--compile in training: the losses and every gradient of eager training, to float32 round-off, and one
    graph for batches of other samples, sizes and lengths. Captured by torch.compile's aot_eager backend:
    the graphs inductor is handed, forward and backward, without generating their code (which the test
    above covers)."""
    import torch
    eager, compiled = build_model(tiny_mt5_path).train(), build_model(tiny_mt5_path).train()
    compiled.compile_pose_encoder(backend="aot_eager")
    for step, batch in enumerate(demo_batches(demo_root, eager.mt5_tokenizer)):
        results = []
        for model in (eager, compiled):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(step)  # mT5's dropout draws the same masks in both
            with torch._dynamo.config.patch(error_on_recompile=step > 0):
                loss = training_loss(model, batch)["loss"]
            loss.backward()
            results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
        (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
        assert torch.allclose(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
        assert eager_grads.keys() == compiled_grads.keys() and len(eager_grads) > 200
        for name, grad in eager_grads.items():  # measured: at most 5e-6 apart, on gradients of norm 1e-8 to 5
            assert (compiled_grads[name] - grad).norm() <= 1e-4 * grad.norm() + 1e-5, name


def test_convolution_benchmark_runs_tiny(capsys):
    """benchmark.py convs: each encoder convolution shape timed as nn.Conv2d and as a matrix product, in process."""
    from bench import convs as bench_convs
    bench_convs.main(["--tiny"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary) == {"mm_gflops", "convs", "ratio"}
    assert [r["shape"] for r in summary["convs"]] == [bench_convs.conv_rates(shape, 1, 1, 1, 1)["shape"]
                                                      for shape in bench_convs.SHAPES]


def test_convolution_rates_from_known_times():
    """256->512 channels, kernel 5, 21 nodes, batch 2, 10 frames: 3 x 2 x 2 x 10 x 21 x 256 x 512 x 5 = 1.65 GFLOP
    (forward + backward, 2 per multiply-add), in 0.5 s as nn.Conv2d and 0.25 s as a matrix product."""
    from bench import convs as bench_convs
    assert bench_convs.conv_rates((256, 512, 5, 21), 2, 10, 0.5, 0.25) == {
        "shape": "256->512 k5 V21", "conv_gflops": 3.3, "matmul_gflops": 6.6, "ratio": 2.0}


@pytest.mark.parametrize("kernel", [1, 5])
def test_convolution_as_a_matrix_product_matches_conv2d_with_gradients(kernel):
    """The benchmark's matrix-product form computes what nn.Conv2d computes (forward and every gradient)."""
    import torch

    from bench import convs as bench_convs
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
    _, summary = run_benchmark("run", "--baseline", "HEAD", "--rounds", "1", "--threads", str(e2e.THREADS))
    assert set(summary) == {"baseline_s", "work_s", "ratio", "paired_ratio", "baseline_cpu_s", "work_cpu_s",
                            "cpu_ratio", "rounds"} and summary["rounds"] == 1


@pytest.mark.e2e  # builds three models and profiles a training step of each
def test_the_branch_adds_no_host_reads_to_the_step():
    """Token and pooled mode read the host no more often per forward + backward than the pose-only model (the
    reads left are transformers' attention-mask checks); geoopt's curvature branches used to add 18 and 27."""
    from bench import syncs as bench_syncs
    reads = bench_syncs.measure(batch_size=2, frames=8, text_len=5)["syncs_per_step"]
    assert reads["token"] == reads["pooled"] == reads["off"], reads


@pytest.mark.slow
def test_gpu_check_runs_its_device_independent_steps_on_cpu(tmp_path):
    """script/gpu_check.py --tiny: the start-up broadcast of the 0-d parameters forced on (gloo here, NCCL on a
    GPU machine) and the host-read count, each in a process of its own, into one JSON summary."""
    out = tmp_path / "summary.json"
    result = e2e.run([sys.executable, "script/gpu_check.py", "--tiny", "--steps", "nccl_broadcast,syncs", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == json.loads(out.read_text())
    assert summary["nccl_broadcast"]["broadcast_ok"] and summary["nccl_broadcast"]["backend"] == "gloo"
    reads = summary["syncs"]["syncs_per_step"]
    assert reads["token"] == reads["off"] and summary["syncs"]["ok"]

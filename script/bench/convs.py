"""How close the ST-GCN's convolutions run to the machine's matrix-product rate (where the CPU step goes).

    python script/benchmark.py convs [--threads 2] [--batch_size 4] [--frames 64] [--repeats 10]
    python script/benchmark.py convs --tiny      # seconds: the suite's smoke run

Measures, in one process with the same threads: a square float32 `torch.mm` (the reference rate), then
forward + backward (input and weight gradients) of each convolution shape of the encoder's blocks at
(batch, channels, frames, nodes): the (5, 1) temporal convolution and the 1x1 convolutions of the graph
convolutions and residuals, each as today's `nn.Conv2d` and written as a matrix product (1x1: one
batched product; (5, 1): im2col over time, then one product). GFLOP/s count 2 per multiply-add and
3x forward for forward + backward. A layout change can only win where a convolution runs well below
the reference rate. Last line: JSON {"mm_gflops", "convs": [{shape, conv_gflops, matmul_gflops,
ratio (conv time / matmul time, > 1: the matrix product is faster)}], "ratio": the largest of them}.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

# (in channels, out channels, temporal kernel, nodes): the encoder's distinct convolution shapes.
SHAPES = [(256, 256, 5, 21), (256, 512, 1, 21), (128, 512, 1, 21), (64, 256, 1, 21), (64, 128, 1, 21),
          (256, 256, 5, 9), (256, 512, 1, 9)]


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--mm_size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, 1 repeat: a smoke run")
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch_size, args.frames, args.mm_size, args.repeats = 1, 8, 256, 1
    return args


def seconds(fn, repeats):
    """Best of `repeats` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def conv_as_matmul(x, weight, bias):
    """nn.Conv2d with a (k, 1) kernel and 'same' temporal padding on x (N, C, T, V), as one matrix product:
    out[n, o, t, v] = bias[o] + sum_{c, j} weight[o, c, j] x[n, c, t + j - (k - 1) / 2, v]."""
    n, c, t, v = x.shape
    out_channels, _, k, _ = weight.shape
    if k == 1:
        columns = x.reshape(n, c, t * v)
    else:
        padded = F.pad(x, (0, 0, (k - 1) // 2, (k - 1) // 2))
        columns = padded.unfold(2, k, 1).permute(0, 1, 4, 2, 3).reshape(n, c * k, t * v)
    return (torch.matmul(weight.reshape(out_channels, -1), columns) + bias[:, None]).view(n, out_channels, t, v)


def measure(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    a, b = torch.randn(args.mm_size, args.mm_size), torch.randn(args.mm_size, args.mm_size)
    mm_gflops = 2 * args.mm_size ** 3 / seconds(lambda: a @ b, args.repeats) / 1e9
    results = []
    for in_channels, out_channels, kernel, nodes in SHAPES:
        conv = torch.nn.Conv2d(in_channels, out_channels, (kernel, 1), padding=((kernel - 1) // 2, 0))
        x = torch.randn(args.batch_size, in_channels, args.frames, nodes, requires_grad=True)
        grad_out = torch.randn(args.batch_size, out_channels, args.frames, nodes)
        reference = conv(x)
        assert torch.allclose(conv_as_matmul(x, conv.weight, conv.bias), reference, atol=1e-4, rtol=1e-4)
        wanted = [x, conv.weight, conv.bias]
        conv_s = seconds(lambda: torch.autograd.grad(conv(x), wanted, grad_out), args.repeats)
        matmul_s = seconds(lambda: torch.autograd.grad(conv_as_matmul(x, conv.weight, conv.bias), wanted, grad_out),
                           args.repeats)
        results.append(conv_rates((in_channels, out_channels, kernel, nodes), args.batch_size, args.frames,
                                  conv_s, matmul_s))
    return mm_gflops, results


def conv_rates(shape, batch_size, frames, conv_s, matmul_s):
    """One convolution shape's result from its two times (s): FLOPs = 3 (forward + backward) x 2 per multiply-add x
    B T V C_in C_out k, as GFLOP/s of each form, and ratio = conv time / matrix-product time."""
    in_channels, out_channels, kernel, nodes = shape
    flops = 3 * 2 * batch_size * frames * nodes * in_channels * out_channels * kernel
    return {"shape": f"{in_channels}->{out_channels} k{kernel} V{nodes}", "conv_gflops": round(flops / conv_s / 1e9, 1),
            "matmul_gflops": round(flops / matmul_s / 1e9, 1), "ratio": round(conv_s / matmul_s, 3)}


def main(argv=None):
    args = parse(argv)
    mm_gflops, results = measure(args)
    print(f"threads {args.threads}; B {args.batch_size}, T {args.frames}; forward + backward, best of {args.repeats}")
    print(f"reference: {args.mm_size}-square torch.mm {mm_gflops:.0f} GFLOP/s")
    for r in results:
        print(f"{r['shape']:>22}: nn.Conv2d {r['conv_gflops']:6.1f} GFLOP/s, as a matrix product "
              f"{r['matmul_gflops']:6.1f} GFLOP/s (conv time / product time {r['ratio']:.2f})")
    print(json.dumps({"mm_gflops": round(mm_gflops, 1), "convs": results,
                      "ratio": max(r["ratio"] for r in results)}))


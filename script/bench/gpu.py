"""Training step at the real mT5-base shape: bf16 DeepSpeed ZeRO-2, as fine_tuning.py trains on GPUs.

    python script/benchmark.py gpu [--batch_size 8] [--frames 256] [--steps 10] [--compile]
    python script/benchmark.py gpu --tiny      # CPU, small shapes: the suite's smoke run

mT5 is built from a config with random weights (mt5-base: d_model 768, 12 + 12 layers, 12 heads, d_ff 2048,
gated-GELU, vocabulary 250,112; --tiny: d_model 64, 2 + 2 layers) and saved with a small SentencePiece
tokenizer to a temporary folder, so Uni_Sign loads it through its ordinary from_pretrained path; batches are
random poses and random target ids. Each configuration (pose-only, token mode, and with --compile both again
with `fine_tuning.py --compile`) runs in its own process: the model, AdamW + DeepSpeed engine and Riemannian
Adam built as fine_tuning.main builds them, `--warmup` steps, then `--steps` timed steps of
fine_tuning.train_one_epoch. Reported per configuration: ms per step, samples/s, achieved TFLOP/s
(Uni_Sign.training_flops), MFU (utils.peak_flops; GPUs whose peak is known), peak memory (GPU: allocated by
torch; CPU: the process's resident set), and the token-mode / pose-only step ratio.
Last line: JSON {"token_over_pose": ..., "configs": {...}}.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from bench.common import ROOT, child_command, single_process_env, training_step

MT5_BASE = dict(d_model=768, d_kv=64, num_heads=12, d_ff=2048, num_layers=12, num_decoder_layers=12,
                vocab_size=250112)
MT5_TINY = dict(d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2, num_decoder_layers=2, vocab_size=None)
TINY = dict(batch_size=2, frames=6, text_len=6, steps=1, warmup=1)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--text_len", type=int, default=32, help="target tokens per sample")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--compile", action="store_true", help="also time both modes with fine_tuning.py --compile")
    parser.add_argument("--tiny", action="store_true", help="small mT5 and batch, one step: a smoke run on CPU")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mt5_path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="pose", choices=["pose", "token"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    return args


def build_random_mt5(out_dir, shape):
    """Tokenizer (the demo's builder, small vocabulary) + an MT5ForConditionalGeneration of `shape` with
    random weights, saved to out_dir (float32, as the released mt5-base checkpoint is)."""
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration
    from make_demo import build_tiny_mt5
    build_tiny_mt5(out_dir)
    from transformers import AutoTokenizer
    vocab = shape["vocab_size"] or len(AutoTokenizer.from_pretrained(out_dir))
    config = MT5Config(**{**shape, "vocab_size": vocab}, feed_forward_proj="gated-gelu", decoder_start_token_id=0,
                       pad_token_id=0, eos_token_id=1, tie_word_embeddings=False, dropout_rate=0.1)
    torch.manual_seed(0)
    MT5ForConditionalGeneration(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def child(args):
    """One configuration: print its measurements as a JSON line."""
    import torch
    import utils

    utils.init_distributed()
    flags = ["--mt5_path", args.mt5_path, "--batch_size", str(args.batch_size), "--num_workers", "0",
             "--zero_stage", "2", "--max_length", str(args.frames)]
    if args.dtype:
        flags += ["--dtype", args.dtype]
    run_args, model, train, batch = training_step(flags + (["--compile"] if args.compile else []), args)
    cuda = torch.cuda.is_available()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    start = time.perf_counter()
    train([batch] * args.warmup, 0)
    sync()
    warmup_s = time.perf_counter() - start
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train([batch] * args.steps, 1)
    sync()
    step_s = (time.perf_counter() - start) / args.steps
    flops = model.training_flops(batch)
    peak = utils.peak_flops(run_args.dtype)
    memory = (torch.cuda.max_memory_allocated() if cuda
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux reports KiB
    result = {**step_rates(step_s, args.batch_size, flops, peak), "peak_memory_gib": round(memory / 2**30, 3), "memory_kind": "gpu_allocated" if cuda else "cpu_rss",
              "warmup_s": round(warmup_s, 1), "flops_per_step": flops, "dtype": run_args.dtype,
              "device": torch.cuda.get_device_name() if cuda else "cpu"}
    print(json.dumps(result), flush=True)


def step_rates(step_s, batch_size, flops, peak):
    """A configuration's rates from its mean step time (s): ms per step, samples/s, achieved TFLOP/s (`flops` per
    step) and model FLOPs utilisation, achieved / `peak` FLOP/s (None where the peak is unknown)."""
    return {"ms_per_step": round(1000 * step_s, 2), "samples_per_s": round(batch_size / step_s, 3),
            "tflops": round(flops / step_s / 1e12, 4), "mfu": round(flops / step_s / peak, 4) if peak else None}


def step_ratio(configs, numerator, denominator):
    """How many times longer a step of configuration `numerator` takes than one of `denominator`."""
    return round(configs[numerator]["ms_per_step"] / configs[denominator]["ms_per_step"], 4)


def run_child(args, mt5_path, mode, compiled):
    cmd = child_command("gpu", "--child", "--mt5_path", mt5_path, "--mode", mode, "--batch_size", args.batch_size,
                        "--frames", args.frames, "--text_len", args.text_len, "--steps", args.steps,
                        "--warmup", args.warmup)
    cmd += ["--dtype", args.dtype] if args.dtype else []
    cmd += ["--compile"] if compiled else []
    env = single_process_env(TOKENIZERS_PARALLELISM=os.environ.get("TOKENIZERS_PARALLELISM", "false"))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: the {mode}{' compiled' if compiled else ''} run failed (exit {result.returncode}):\n"
                 f"{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse(argv)
    if args.child:
        return child(args)
    shape = MT5_TINY if args.tiny else MT5_BASE
    configs = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        mt5_path = build_random_mt5(os.path.join(tmp, "mt5"), shape)
        print(f"random mT5 ({'tiny' if args.tiny else 'mt5-base shape'}) built and saved in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        for compiled in ((False, True) if args.compile else (False,)):
            for mode in ("pose", "token"):
                name = mode + ("_compiled" if compiled else "")
                configs[name] = run_child(args, mt5_path, mode, compiled)
                c = configs[name]
                print(f"{name:>15}: {c['ms_per_step']:.1f} ms/step, {c['samples_per_s']:.2f} samples/s, "
                      f"{c['tflops']:.3f} TFLOP/s, MFU {c['mfu'] if c['mfu'] is not None else 'n/a'}, "
                      f"peak memory {c['peak_memory_gib']:.2f} GiB ({c['memory_kind']}), {c['device']}", flush=True)
    summary = {"batch_size": args.batch_size, "frames": args.frames, "text_len": args.text_len,
               "token_over_pose": step_ratio(configs, "token", "pose")}
    if args.compile:
        summary["token_over_pose_compiled"] = step_ratio(configs, "token_compiled", "pose_compiled")
        summary["eager_over_compiled"] = {m: step_ratio(configs, m, m + "_compiled") for m in ("pose", "token")}
    print(f"token-mode / pose-only step: {summary['token_over_pose']:.3f}")
    print(json.dumps({**summary, "configs": configs}))


"""Training-step cost of the hyperbolic branch (token mode, decoder text source) against the pose-only model.

    python script/benchmark.py hyperbolic [--repeats 7] [--batch_size 8] [--frames 64] [--text_len 20]

One model, one batch: each timed step is forward + backward, once with the branch on and once with it
switched off (`model.config.use_hyperbolic = False`, the pose-only Uni-Sign path), interleaved after a warm-up.
A small mT5 (d_model 128, 2 + 2 layers) is built in a temporary folder. Prints both median times and
their ratio; the last line is JSON {"ratio", "time_off_ms", "time_on_ms"}.
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from types import SimpleNamespace

import torch

from losses import training_loss
from make_demo import build_tiny_mt5, random_batch

def timed_step(model, batch, hyperbolic_on):
    """Wall time (s) of one forward + backward with the branch on or off."""
    model.config.use_hyperbolic = hyperbolic_on
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    training_loss(model, batch)["loss"].backward()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--text_len", type=int, default=20)
    parser.add_argument("--mode", default="token", choices=["pooled", "attn", "token"])
    parser.add_argument("--text_source", default="decoder", choices=["token", "decoder"])
    args = parser.parse_args(argv)

    import models
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        mt5_path = build_tiny_mt5(os.path.join(tmp, "mt5"))
        model = models.Uni_Sign(SimpleNamespace(mt5_path=mt5_path, use_hyperbolic=True, hyp_text_cmp=args.mode,
                                                hyp_text_emb_src=args.text_source))
    model.train()
    batch = random_batch(model.mt5_tokenizer, args.batch_size, args.frames, args.text_len)
    for _ in range(args.warmup):
        timed_step(model, batch, False)
        timed_step(model, batch, True)
    times = {False: [], True: []}
    for repeat in range(args.repeats):
        order = (False, True) if repeat % 2 == 0 else (True, False)  # alternate: no order bias
        for hyperbolic_on in order:
            times[hyperbolic_on].append(timed_step(model, batch, hyperbolic_on))
    model.config.use_hyperbolic = True
    off_ms, on_ms = (1000 * statistics.median(times[flag]) for flag in (False, True))
    # Neighbouring steps share the machine's load: their ratios tell whether other jobs skewed the medians.
    paired = statistics.median(on / off for on, off in zip(times[True], times[False]))
    print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, frames {args.frames}, "
          f"text {args.text_len} tokens, mode {args.mode}/{args.text_source}, {args.repeats} repeats")
    print(f"branch off: {off_ms:.1f} ms (median forward + backward)")
    print(f"branch on:  {on_ms:.1f} ms")
    print(f"ratio: {on_ms / off_ms:.3f} (median of the ratios of neighbouring steps: {paired:.3f}; "
          f"step times ranged {1000 * min(times[False]):.0f}-{1000 * max(times[False]):.0f} ms with the branch off)")
    print(json.dumps({"ratio": round(on_ms / off_ms, 4), "time_off_ms": round(off_ms, 2),
                      "time_on_ms": round(on_ms, 2), "paired_ratio": round(paired, 4)}))


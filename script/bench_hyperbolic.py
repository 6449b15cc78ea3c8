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
import sys
import tempfile
import time
from types import SimpleNamespace

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for folder in (ROOT, os.path.join(ROOT, "script")):
    if folder not in sys.path:
        sys.path.insert(0, folder)

SENTENCES = ["他现在在哪儿呢？", "你最喜欢哪个季节？", "今天天气很好，我们一起去公园散步吧。",
             "他什么时候能回来？"]


def build_tiny_mt5(out_dir):
    """A small tokenizer + mT5 (the demo's builder), written to out_dir."""
    import make_demo
    return make_demo.build_tokenizer_and_mt5(SENTENCES, out_dir, seed=0)  # the builder adds the prompts


def random_batch(tokenizer, batch_size, frames, text_len, seed=0):
    """A collated batch of the interface's shape: smooth random poses, varied lengths, ~text_len targets."""
    from datasets import PART_INDICES, PROMPTS
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(frames * 3 // 4, frames + 1, (batch_size,), generator=gen)
    lengths[0] = frames
    pose = {}
    for part, nodes in ((part, len(indices)) for part, indices in PART_INDICES.items()):
        walk = torch.cumsum(torch.randn(batch_size, frames, nodes, 2, generator=gen) * 0.02, dim=1)
        xy = (torch.rand(batch_size, 1, nodes, 2, generator=gen) * 2 - 1 + walk).clamp(-1, 1)
        score = torch.rand(batch_size, frames, nodes, 1, generator=gen)
        pose[part] = torch.cat([xy, score], dim=-1)
    pose_mask = (torch.arange(frames)[None] < lengths[:, None]).long()
    prompt = tokenizer([PROMPTS["Chinese"]] * batch_size, return_tensors="pt", padding=True)
    ids = torch.randint(3, len(tokenizer), (batch_size, text_len), generator=gen)
    ids[:, -1] = tokenizer.eos_token_id
    labels_mask = torch.ones_like(ids)
    labels_mask[1::2, text_len * 3 // 4:] = 0  # every other target shorter: padding is exercised
    labels = ids.masked_fill(labels_mask == 0, -100)
    return {"pose": pose, "pose_mask": pose_mask, "prompt_ids": prompt.input_ids, "prompt_mask": prompt.attention_mask,
            "labels": labels, "labels_mask": labels_mask}


def timed_step(model, batch, hyperbolic_on):
    """Wall time (s) of one forward + backward with the branch on or off."""
    model.config.use_hyperbolic = hyperbolic_on
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model(batch)["loss"].backward()
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


if __name__ == "__main__":
    main()

"""Device-to-host reads of one training forward + backward, per mode of the hyperbolic branch.

    python script/benchmark.py syncs [--batch_size 4] [--frames 16]

Each read (torch.profiler's aten::_local_scalar_dense: .item(), float(), bool() of a tensor, a data-dependent
shape) makes the host wait for every kernel queued on a GPU, so the host cannot queue the step ahead of the
device. Counted for the demo-size model (random weights, a small tokenizer) without the branch ("off"), and in
pooled and token mode; on CUDA also the warnings of torch.cuda.set_sync_debug_mode. The first forward +
backward is a warm-up and not counted. Last line: JSON {"syncs_per_step": {"off": n, "pooled": n, "token": n}}.
"""
import argparse
import json
import os
import tempfile
import warnings

MODES = ("off", "pooled", "token")


def count_reads(model, batch):
    """(profiler reads, CUDA sync warnings or None) of one forward + backward of model on batch."""
    import torch
    from losses import training_loss
    training_loss(model, batch)["loss"].backward()  # warm-up: one-time work is not a step's
    model.zero_grad()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught, \
            torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        warnings.simplefilter("always")
        training_loss(model, batch)["loss"].backward()
    if cuda:
        torch.cuda.set_sync_debug_mode(0)
    reads = sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")
    return reads, (sum("synchroniz" in str(w.message) for w in caught) if cuda else None)


def measure(batch_size=4, frames=16, text_len=8):
    """{"syncs_per_step": {mode: reads}, "cuda_sync_warnings": {mode: n} or None, "device": ...}."""
    import fine_tuning
    import utils
    from make_demo import build_tiny_mt5, random_batch
    from models import Uni_Sign
    device = utils.device()
    reads, warned = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        mt5 = build_tiny_mt5(os.path.join(tmp, "mt5"))
        for mode in MODES:
            flags = ["--mt5_path", mt5]
            if mode != "off":
                flags += ["--use_hyperbolic", "--hyp_text_cmp", mode, "--hyp_text_emb_src", "decoder"]
            utils.set_seed(0)
            model = Uni_Sign(fine_tuning.get_args_parser().parse_args(flags)).to(device)
            model.set_total_updates(100)
            reads[mode], warned[mode] = count_reads(model, random_batch(model.mt5_tokenizer, batch_size, frames,
                                                                        text_len))
    return {"syncs_per_step": reads, "cuda_sync_warnings": warned if warned["off"] is not None else None,
            "device": str(device)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args(argv)
    result = measure(args.batch_size, args.frames)
    for mode, n in result["syncs_per_step"].items():
        print(f"{mode:>7}: {n} device-to-host reads per forward + backward")
    print(json.dumps(result))


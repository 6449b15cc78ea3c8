"""Speed checks, measured side by side in one process.

    python script/benchmark.py data         # pose loading + normalisation vs a bare pickle.load; loader vs model speed
    python script/benchmark.py index        # CSL-News-size sample index: start-up and memory, compact vs plain
    python script/benchmark.py hyperbolic   # training step with the token-mode branch vs without
    python script/benchmark.py metrics      # scoring the 2,349 How2Sign pairs (target: under 2 s)
    python script/benchmark.py extract      # pose extraction: the pipeline's own cost per frame vs the models'
    python script/benchmark.py step --baseline REV   # training step: working tree vs a git revision
    python script/benchmark.py convs        # the ST-GCN's convolutions against the machine's matrix-product rate
    python script/benchmark.py gpu          # bf16 ZeRO-2 step at the mT5-base shape (--tiny: CPU smoke run)
    python script/benchmark.py syncs        # device-to-host reads per forward + backward: no branch, pooled, token
    python script/benchmark.py run --baseline REV    # a whole 1-step fine_tuning.py run: working tree vs a revision
    python script/benchmark.py render       # skeleton drawing per frame vs the mp4 and GIF encoders

Each prints its measurements; its last line is a JSON object (the side-by-side ones: the ratio under "ratio";
index: "memory_ratio" and "startup_s"; convs: GFLOP/s; extract: pipeline_ms_per_frame and model_ms_per_frame; gpu: ms per
step, TFLOP/s, MFU, memory per configuration; render: draw_ms_per_frame and the encoders').
"""
import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# sub-command -> the module (script/bench_*.py) whose main(argv) runs it
BENCHMARKS = {"data": "bench_data", "index": "bench_index", "hyperbolic": "bench_hyperbolic", "extract": "bench_extract",
              "step": "bench_step", "convs": "bench_convs", "gpu": "bench_gpu", "run": "bench_run",
              "render": "bench_render", "syncs": "bench_syncs"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted([*BENCHMARKS, "metrics"]))
    args, rest = parser.parse_known_args()
    if args.which == "metrics":
        return bench_metrics()
    importlib.import_module(BENCHMARKS[args.which]).main(rest)


def bench_metrics():
    """Seconds to score the literature's How2Sign test outputs (BLEU-1..4 + ROUGE-L), best of 3."""
    import json
    import time
    import SLRT_metrics
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data",
                          "reference_outputs", "how2sign")
    _, hyps = SLRT_metrics.read_reference_file(os.path.join(folder, "test_tmp_pres.txt"))
    _, refs = SLRT_metrics.read_reference_file(os.path.join(folder, "test_tmp_refs.txt"))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        SLRT_metrics.translation_metrics(hyps, refs)
        times.append(time.perf_counter() - start)
    print(f"scoring {len(hyps)} How2Sign pairs: {min(times):.3f} s (target: under 2 s)")
    print(json.dumps({"seconds": round(min(times), 4), "pairs": len(hyps), "ratio_to_target": round(min(times) / 2.0, 4)}))


if __name__ == "__main__":
    main()

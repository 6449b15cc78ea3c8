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

# sub-command -> the module (script/bench/) whose main(argv) runs it
BENCHMARKS = {"data": "bench.data", "index": "bench.index", "hyperbolic": "bench.hyperbolic",
              "metrics": "bench.metrics", "extract": "bench.extract", "step": "bench.step", "convs": "bench.convs",
              "gpu": "bench.gpu", "run": "bench.run", "render": "bench.render", "syncs": "bench.syncs"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(BENCHMARKS))
    args, rest = parser.parse_known_args()
    importlib.import_module(BENCHMARKS[args.which]).main(rest)


if __name__ == "__main__":
    main()

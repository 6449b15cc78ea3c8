"""Seconds to score the literature's How2Sign test outputs (BLEU-1..4 + ROUGE-L), best of 3.

    python script/benchmark.py metrics
"""
import json
import os
import time

import SLRT_metrics
from bench.common import ROOT


def main(argv=None):
    folder = os.path.join(ROOT, "tests", "data", "reference_outputs", "how2sign")
    _, hyps = SLRT_metrics.read_reference_file(os.path.join(folder, "test_tmp_pres.txt"))
    _, refs = SLRT_metrics.read_reference_file(os.path.join(folder, "test_tmp_refs.txt"))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        SLRT_metrics.translation_metrics(hyps, refs)
        times.append(time.perf_counter() - start)
    print(f"scoring {len(hyps)} How2Sign pairs: {min(times):.3f} s (target: under 2 s)")
    print(json.dumps({"seconds": round(min(times), 4), "pairs": len(hyps), "ratio_to_target": round(min(times) / 2.0, 4)}))

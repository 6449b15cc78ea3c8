"""CSL-News-size sample index: start-up time and memory of 1 rank x 4 DataLoader workers, compact vs plain.

    python script/benchmark.py index [--clips 1500000] [--workers 4] [--repeats 1]

Writes a synthetic CSL-News-format label JSON ({'video', 'pose', 'text'} per clip, Chinese texts of
10-50 characters), then, in a fresh process per measurement ("the rank"), builds the train split's
sample list either as datasets.build_dataset does (the compact SampleIndex: streamed parse into numpy
string tables) or as a plain list of dicts (json.load, one dict per clip), forks the workers the way a
DataLoader does (fork), lets every worker read every sample's name, pose path and text, and sums the
proportional set size (PSS, /proc/<pid>/smaps_rollup: shared pages split between the processes sharing
them) of the rank and its workers. A run without any index gives the baseline (Python, torch, numpy).
The modes alternate (compact, plain, compact, ...) so outside load affects both alike.
Last line: JSON with memory_ratio (compact / plain, whole processes), index_memory_ratio (the same
less the baseline) and startup_s (the compact index's build time).
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

from bench.common import child_command


def write_news_json(path, clips, seed=0):
    """A CSL-News-format label file of `clips` entries, written in blocks (the writer stays small)."""
    rng = np.random.default_rng(seed)
    alphabet = np.array([chr(c) for c in range(0x4E00, 0x4E00 + 3000)])
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for start in range(0, clips, 100_000):
            count = min(100_000, clips - start)
            lengths = rng.integers(10, 51, count)
            chars = alphabet[rng.integers(0, len(alphabet), int(lengths.sum()))]
            ends = np.cumsum(lengths)
            parts = []
            for i, end in enumerate(ends.tolist()):
                clip = start + i
                name = f"news_{clip // 1000:05d}/clip_{clip:08d}"
                text = "".join(chars[end - lengths[i]:end])
                parts.append(f'{{"video": "{name}.mp4", "pose": "{name}.pkl", "text": "{text}"}}')
            f.write(("," if start else "") + ",".join(parts))
        f.write("]")


def memory_kb(pid):
    """(PSS, USS) of one process in kB, from /proc/<pid>/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def touch_every_sample(samples, ready, release):
    """A DataLoader worker's view: read each sample's fields as PoseDataset.__getitem__ does."""
    total = 0
    for i in range(len(samples)):
        sample = samples[i]
        total += len(sample["name"]) + len(sample["pose_path"]) + len(sample["text"])
    ready.set()
    release.wait()
    os._exit(0 if total else 1)


def measure(mode, path, workers):
    """In this fresh process: build the index, fork the workers, let them touch everything, sum memory."""
    import multiprocessing
    import datasets  # noqa: F401  (torch and numpy loaded, as in a training rank)

    pose_dir = os.path.dirname(path)
    start = time.perf_counter()
    if mode == "compact":
        samples = datasets.build_dataset("CSL_News", "train", argparse.Namespace(task="SLT"), label_path=path,
                                         pose_dir=pose_dir).samples
    elif mode == "plain":  # the list of dicts this project used before (and the release uses)
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        entries = entries[:int(len(entries) * datasets.CSL_NEWS_TRAIN_FRACTION)]
        samples = [{"name": os.path.splitext(e["pose"])[0], "pose_path": os.path.join(pose_dir, e["pose"]),
                    "text": e["text"]} for e in entries]
        del entries
    else:
        samples = []
    startup = time.perf_counter() - start
    context = multiprocessing.get_context("fork")
    release = context.Event()
    processes, readies = [], []
    for _ in range(workers):
        ready = context.Event()
        process = context.Process(target=touch_every_sample, args=(samples, ready, release))
        process.start()
        processes.append(process)
        readies.append(ready)
    for ready in readies:
        ready.wait()
    usage = [memory_kb(pid) for pid in [os.getpid()] + [p.pid for p in processes]]
    release.set()
    for process in processes:
        process.join()
    print(json.dumps({"mode": mode, "samples": len(samples), "startup_s": startup,
                      "pss_mb": sum(u[0] for u in usage) / 1024, "uss_mb": sum(u[1] for u in usage) / 1024,
                      "rank_pss_mb": usage[0][0] / 1024}))


def run_child(mode, path, workers):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(child_command("index", "--child", mode, path, "--workers", workers), capture_output=True,
                            text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1_500_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="measurements per mode, interleaved")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return measure(args.child[0], args.child[1], args.workers)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "CSL_News_Labels.json")
        start = time.perf_counter()
        write_news_json(path, args.clips)
        print(f"synthetic CSL-News labels: {args.clips} clips, {os.path.getsize(path) / 1e6:.0f} MB "
              f"(written in {time.perf_counter() - start:.0f} s)")
        results = {"none": [run_child("none", path, args.workers)]}
        for _ in range(args.repeats):
            for mode in ("compact", "plain"):
                results.setdefault(mode, []).append(run_child(mode, path, args.workers))
    best = {mode: {key: min(r[key] for r in runs) for key in ("startup_s", "pss_mb", "uss_mb", "rank_pss_mb")}
            for mode, runs in results.items()}
    baseline = best["none"]["pss_mb"]
    print(f"1 rank + {args.workers} workers, each worker read all {results['compact'][0]['samples']} train samples "
          f"(PSS summed over the {args.workers + 1} processes; best of {args.repeats}):")
    print(f"  baseline (no index): {baseline:8.0f} MB")
    for mode in ("compact", "plain"):
        print(f"  {mode:8s}: start-up {best[mode]['startup_s']:6.1f} s, memory {best[mode]['pss_mb']:8.0f} MB "
              f"({best[mode]['pss_mb'] - baseline:7.0f} MB over the baseline; the rank alone "
              f"{best[mode]['rank_pss_mb']:.0f} MB)")
    ratio = best["compact"]["pss_mb"] / best["plain"]["pss_mb"]
    index_ratio = (best["compact"]["pss_mb"] - baseline) / max(best["plain"]["pss_mb"] - baseline, 1e-9)
    print(f"memory compact / plain: {ratio:.3f} (index alone: {index_ratio:.3f}); goal <= 0.25, start-up <= 30 s")
    print(json.dumps({"clips": args.clips, "workers": args.workers, "memory_ratio": round(ratio, 4),
                      "index_memory_ratio": round(index_ratio, 4), "startup_s": round(best["compact"]["startup_s"], 2),
                      "plain_startup_s": round(best["plain"]["startup_s"], 2),
                      "compact_mb": round(best["compact"]["pss_mb"]), "plain_mb": round(best["plain"]["pss_mb"]),
                      "baseline_mb": round(baseline)}))


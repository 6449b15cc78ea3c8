"""CSL-News-size sample index: start-up time and memory of 1 rank x 4 DataLoader workers, compact vs plain.

    python script/benchmark.py index [--clips 1500000] [--workers 4] [--repeats 1]
    python script/benchmark.py index --youtube_asl [--videos 11093] [--clips_per_video 55]

--youtube_asl: the same rows for a YouTube-ASL-size caption corpus (captions.py: 11,093 long videos' pose files
beside their .vtt captions, 55 captions each, about 610k clips as the corpus has), plus the clip-read row: a 30-s
clip read from a one-hour pose file against the same clip in a file of its own, timed alternately.

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
    import label_files

    pose_dir = os.path.dirname(path)
    start, cpu = time.perf_counter(), time.process_time()
    if mode in ("captions", "captions-plain"):  # the caption corpus: compact index, or its clips as dicts
        samples = datasets.build_dataset("YouTubeASL", "train", argparse.Namespace(task="SLT"), label_path=path,
                                         pose_dir=path).samples
        if mode == "captions-plain":
            samples = list(samples)
    elif mode == "compact":
        samples = datasets.build_dataset("CSL_News", "train", argparse.Namespace(task="SLT"), label_path=path,
                                         pose_dir=pose_dir).samples
    elif mode == "plain":  # the list of dicts this project used before (and the release uses)
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        entries = entries[:int(len(entries) * label_files.CSL_NEWS_TRAIN_FRACTION)]
        samples = [{"name": os.path.splitext(e["pose"])[0], "pose_path": os.path.join(pose_dir, e["pose"]),
                    "text": e["text"]} for e in entries]
        del entries
    else:
        samples = []
    startup, startup_cpu = time.perf_counter() - start, time.process_time() - cpu
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
    print(json.dumps({"mode": mode, "samples": len(samples), "startup_s": startup, "startup_cpu_s": startup_cpu,
                      "index_bytes": samples.nbytes() if hasattr(samples, "nbytes") else None,
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
    parser.add_argument("--youtube_asl", action="store_true", help="the caption-corpus rows (see above)")
    parser.add_argument("--videos", type=int, default=11_093)
    parser.add_argument("--clips_per_video", type=int, default=55)
    parser.add_argument("--video_s", type=int, default=3600, help="the clip-read row's long video (seconds)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return measure(args.child[0], args.child[1], args.workers)
    if args.youtube_asl:
        return youtube_asl_rows(args)
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



# ----------------------------------------------------------------------------- --youtube_asl
CAPTION_SECONDS, CAPTION_STEP_S, FPS = 5.0, 5.8, 25.0  # YouTube-ASL: 984 h / 610,193 captions = 5.8 s each


def write_caption_corpus(folder, videos, per_video, distinct_poses=8):
    """`videos` VIDEO.en.vtt files of `per_video` captions (5 s each, every 5.8 s) beside VIDEO.pkl, a link to
    one of `distinct_poses` pose files long enough for them (the index reads each video's frame count and fps)."""
    import datasets  # noqa: F401  (pose files written as extract_poses.py writes them)
    import pickle
    frames = int((per_video * CAPTION_STEP_S + 1) * FPS)
    rng = np.random.default_rng(0)
    targets = []
    for k in range(distinct_poses):
        target = os.path.join(folder, f"pose_{k}.data")
        with open(target, "wb") as f:
            pickle.dump({"keypoints": rng.random((frames, 1, 133, 2), dtype=np.float32),
                         "scores": rng.random((frames, 1, 133), dtype=np.float32), "fps": FPS}, f, protocol=4)
        targets.append(target)
    words = np.array("the a sign we you learn today deaf hello how are what name my is to and of in".split())
    for v in range(videos):
        video = f"yt{v:07d}"
        os.symlink(targets[v % distinct_poses], os.path.join(folder, f"{video}.pkl"))
        cues = ["WEBVTT\n"]
        for c in range(per_video):
            start = c * CAPTION_STEP_S
            text = " ".join(words[rng.integers(0, len(words), 10)]).capitalize() + "."
            cues.append(f"{_timestamp(start)} --> {_timestamp(start + CAPTION_SECONDS)}\n{text}\n")
        with open(os.path.join(folder, f"{video}.en.vtt"), "w", encoding="utf-8") as f:
            f.write("\n".join(cues))


def _timestamp(seconds):
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:{seconds % 60:06.3f}"


def clip_read_row(folder, rounds=30, video_s=3600):
    """Median ms to load a 30-s clip (750 frames at 25 fps) from a one-hour pose file through datasets.load_pose,
    its layout scan included (cache cleared), against the same clip in a file of its own, alternately."""
    import pickle
    import statistics
    import datasets
    import pose_clips
    rng = np.random.default_rng(1)
    hour, start = int(video_s * FPS), int(video_s / 2 * FPS)
    end = start + 30 * int(FPS)
    keypoints = rng.random((hour, 1, 133, 2), dtype=np.float32)
    scores = rng.random((hour, 1, 133), dtype=np.float32)
    paths = {name: os.path.join(folder, f"{name}.pkl") for name in ("hour", "clip")}
    for name, cut in (("hour", slice(None)), ("clip", slice(start, end))):
        with open(paths[name], "wb") as f:
            pickle.dump({"keypoints": keypoints[cut], "scores": scores[cut], "fps": FPS}, f, protocol=4)
    del keypoints, scores
    times = {"hour": [], "clip": []}
    for _ in range(rounds):
        for name in ("hour", "clip"):
            pose_clips._layout.cache_clear()
            began = time.perf_counter()
            frames = datasets.load_pose(paths[name], (start, end) if name == "hour" else None)[0]
            times[name].append(time.perf_counter() - began)
            assert len(frames) == end - start
    began = time.perf_counter()
    datasets.load_pose(paths["hour"])
    whole = time.perf_counter() - began
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}, whole * 1e3


def youtube_asl_rows(args):
    with tempfile.TemporaryDirectory() as folder:
        corpus = os.path.join(folder, "corpus")
        os.mkdir(corpus)
        start = time.perf_counter()
        write_caption_corpus(corpus, args.videos, args.clips_per_video)
        print(f"synthetic YouTube-ASL-size corpus: {args.videos} videos x {args.clips_per_video} .vtt captions "
              f"(written in {time.perf_counter() - start:.0f} s)")
        news = os.path.join(folder, "CSL_News_Labels.json")
        write_news_json(news, 100_000)
        results = {"none": [run_child("none", news, args.workers)], "news": [run_child("compact", news, 0)]}
        for _ in range(args.repeats):
            for mode in ("captions", "captions-plain"):
                results.setdefault(mode, []).append(run_child(mode, corpus, args.workers))
        reads, whole_ms = clip_read_row(folder, video_s=args.video_s)
    best = {mode: {key: min(r[key] for r in runs) for key in ("startup_s", "startup_cpu_s", "pss_mb")}
            for mode, runs in results.items()}
    baseline, compact, plain = best["none"]["pss_mb"], best["captions"], best["captions-plain"]
    clips = results["captions"][0]["samples"]
    per_clip = results["captions"][0]["index_bytes"] / clips
    per_news = results["news"][0]["index_bytes"] / results["news"][0]["samples"]
    print(f"1 rank + {args.workers} workers, each worker read all {clips} train clips (PSS summed; best of "
          f"{args.repeats}):")
    print(f"  baseline (no index): {baseline:8.0f} MB")
    for mode, row in (("compact", compact), ("plain", plain)):
        print(f"  {mode:8s}: start-up {row['startup_s']:6.1f} s ({row['startup_cpu_s']:.1f} s of CPU), memory "
              f"{row['pss_mb']:8.0f} MB "
              f"({row['pss_mb'] - baseline:7.0f} MB over the baseline)")
    ratio = compact["pss_mb"] / plain["pss_mb"]
    index_ratio = (compact["pss_mb"] - baseline) / max(plain["pss_mb"] - baseline, 1e-9)
    print(f"memory compact / plain: {ratio:.3f} (index alone: {index_ratio:.3f}); index bytes per clip "
          f"{per_clip:.0f} vs CSL-News's {per_news:.0f} per sample")
    ratio_read = reads["hour"] / reads["clip"]
    print(f"30-s clip: from a {args.video_s}-s file {reads['hour']:.2f} ms, in its own file {reads['clip']:.2f} ms "
          f"(ratio {ratio_read:.2f}, goal <= 2); the one-hour file read whole: {whole_ms:.0f} ms")
    print(json.dumps({"videos": args.videos, "clips": clips, "workers": args.workers,
                      "memory_ratio": round(ratio, 4), "index_memory_ratio": round(index_ratio, 4),
                      "startup_s": round(compact["startup_s"], 2), "plain_startup_s": round(plain["startup_s"], 2),
                      "startup_cpu_s": round(compact["startup_cpu_s"], 2), "index_bytes_per_clip": round(per_clip, 1),
                      "news_index_bytes_per_sample": round(per_news, 1),
                      "clip_read_ms": round(reads["hour"], 3), "own_file_read_ms": round(reads["clip"], 3),
                      "clip_read_ratio": round(ratio_read, 3), "whole_hour_read_ms": round(whole_ms, 1)}))

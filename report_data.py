"""What a run's report shows, read and computed from its output folder (report_html.py draws it).

A run folder is what fine_tuning.py writes: log.txt (one JSON record per epoch), the last epoch's prediction
files {split}_tmp_pres.txt / {split}_tmp_refs.txt (`sample: NAME, prediction|ground-truth: TEXT`), checkpoint.pth
(whose `args` are the run's flags), and what other scripts add beside them: embeddings/poincare_disk.png
(script/plot_embeddings.py) and part_importance/part_importance.json (script/part_importance.py).

Scores follow SLRT_metrics' protocol (texts formatted for the dataset: characters for CSL). Sentence BLEU is
sacrebleu's sentence_score (exp smoothing, effective order); a bucket's BLEU-4 is the corpus BLEU-4 of its
sentences (summed sufficient statistics), its ROUGE-L the mean sentence ROUGE-L F.
"""
import argparse
import json
import os
import types

import numpy as np
import torch
from sacrebleu.metrics import BLEU

import utils
from SLRT_metrics import (bleu4_from_stats, bleu_sentence_stats, format_for_dataset, paired_bootstrap,
                          read_reference_file, rouge_l_f)

# Flags that say where or how a run ran, not what it trained (engine's, and where its files are): not listed
# among the settings that differ.
PLACES = {"overwrite", "train_label_path", "dev_label_path", "test_label_path", "pose_dir", "mt5_path"}
BUCKETS = 4  # quantile buckets of reference and video length


class ReportError(ValueError):
    """A folder that cannot be reported on; the message names the folder and what is missing."""


def sentence_scores(hyps, refs, dataset_name):
    """Per-sample smoothed sentence BLEU (sacrebleu's sentence_score: exp smoothing, effective order) and
    ROUGE-L F, both x100, on the texts formatted for the dataset (characters for CSL)."""
    hyps = format_for_dataset(hyps, dataset_name, is_reference=False)
    refs = format_for_dataset(refs, dataset_name, is_reference=True)
    bleu = BLEU(tokenize="13a", smooth_method="exp", effective_order=True)
    return (np.array([bleu.sentence_score(h, [r]).score for h, r in zip(hyps, refs)]),
            100.0 * np.array([rouge_l_f(h, r) for h, r in zip(hyps, refs)]))


def run_args(folder):
    """The run's flags (checkpoint.pth's `args`), read without loading its weights (memory-mapped); {} without
    a checkpoint."""
    path = os.path.join(folder, "checkpoint.pth")
    if not os.path.isfile(path):
        return {}
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        try:
            args = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("args") or {}
        except RuntimeError:  # a file of torch's legacy format cannot be memory-mapped: read it whole
            args = torch.load(path, map_location="cpu", weights_only=True).get("args") or {}
    except (RuntimeError, ValueError, OSError, EOFError, AttributeError) as err:
        raise ReportError(f"{path} is not a readable checkpoint ({type(err).__name__}); the report reads the "
                          "run's flags from it") from None
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)


def read_predictions(folder, split):
    """(names, hypotheses, references) of the run's {split} prediction files."""
    paths = [os.path.join(folder, f"{split}_tmp_{kind}.txt") for kind in ("pres", "refs")]
    missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if missing:
        raise ReportError(f"{folder} has no {split} predictions ({' and '.join(missing)} missing): the run "
                          "writes them when it evaluates, after each epoch")
    try:
        names, hyps = read_reference_file(paths[0])
        ref_names, refs = read_reference_file(paths[1])
    except ValueError as err:
        raise ReportError(f"{folder}: {err}") from None
    if not names:
        raise ReportError(f"{folder}: {os.path.basename(paths[0])} is empty: no {split} predictions to report")
    if names != ref_names:
        raise ReportError(f"{folder}: {os.path.basename(paths[0])} and {os.path.basename(paths[1])} list other "
                          "samples: they must come from the same evaluation")
    return names, hyps, refs


def read_run(folder, split, defaults=None):
    """Everything the report shows of one run folder; a ReportError when it is not a run or lacks predictions.
    defaults: every flag's value when not given (fine_tuning.default_settings), None when not known."""
    if not os.path.isdir(folder):
        raise ReportError(f"{folder} is not a folder: pass a run's --output_dir")
    if not os.path.isfile(os.path.join(folder, "log.txt")):
        raise ReportError(f"{folder} is not a training run: it has no log.txt (fine_tuning.py writes one record "
                          "per epoch there)")
    try:
        records = [r for r in utils.read_log(folder) if "epoch" in r]
    except (ValueError, OSError) as err:
        raise ReportError(f"{folder}/log.txt cannot be read ({err})") from None
    names, hyps, refs = read_predictions(folder, split)
    args = run_args(folder)
    dataset = args.get("dataset", "")
    bleu, rouge = sentence_scores(hyps, refs, dataset)
    return types.SimpleNamespace(folder=folder, split=split, args=args, defaults=defaults, records=records,
                                 dataset=dataset,
                                 names=names, hyps=hyps, refs=refs, bleu=bleu, rouge=rouge,
                                 frames=video_frames(args, split, names), words=reference_lengths(refs, dataset))


def reference_lengths(refs, dataset):
    """Reference length in the units BLEU counts: characters for CSL datasets, words otherwise."""
    return np.array([len(r.split()) for r in format_for_dataset(refs, dataset, is_reference=True)])


def pose_paths(args, split):
    """{sample name: pose file} of the run's split (its label file and pose folder), or None when they are not
    on this machine."""
    from datasets import build_dataset
    if not args.get("dataset"):
        return None
    try:
        dataset = build_dataset(args["dataset"], split, {"task": args.get("task", "SLT")},
                                label_path=args.get(f"{split}_label_path"), pose_dir=args.get("pose_dir"))
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return {s["name"]: s["pose_path"] for s in dataset.samples}


def video_frames(args, split, names):
    """Frames of each sample's pose file (nan where it cannot be read), or None without the poses."""
    from datasets import BadSampleError, load_pose
    paths = pose_paths(args, split)
    if paths is None:
        return None
    frames = []
    for name in names:
        try:
            frames.append(len(load_pose(paths[name])[0]) if name in paths else np.nan)
        except (BadSampleError, OSError):
            frames.append(np.nan)
    return np.array(frames, dtype=float)


def differing_settings(args, defaults):
    """{flag: (value, default)} of the run's flags that differ from `defaults` (fine_tuning.default_settings)."""
    from engine import RUN_ONLY_FLAGS
    return {k: (v, defaults[k]) for k, v in sorted(args.items())
            if k in defaults and k not in RUN_ONLY_FLAGS | PLACES and v != defaults[k]
            and not (isinstance(v, (list, tuple)) and list(v) == list(defaults[k] or []))}


def best_record(records, metric="bleu4"):
    """The record of the epoch with the best dev score, or None."""
    scored = [r for r in records if f"dev_{metric}" in r]
    return max(scored, key=lambda r: r[f"dev_{metric}"]) if scored else None


def bucket_edges(values, count=BUCKETS):
    """Distinct quantile edges that split `values` into up to `count` buckets of similar size."""
    values = values[np.isfinite(values)]
    if not len(values):
        return []
    return sorted(set(np.quantile(values, np.linspace(0, 1, count + 1)).round().tolist()))


def bucket_scores(values, edges, runs):
    """Per bucket [lo, hi] of `values` (the first bucket closed, the others (lo, hi]): its label, sample count,
    and each run's corpus BLEU-4 and mean ROUGE-L over the bucket's samples."""
    rows = []
    for k in range(max(len(edges) - 1, 1)):
        lo, hi = (edges[k], edges[k + 1]) if len(edges) > 1 else (edges[0], edges[0])
        inside = (values >= lo if k == 0 else values > lo) & (values <= hi)
        if not inside.any():
            continue
        label = f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"
        rows.append({"bucket": label, "samples": int(inside.sum()),
                     "scores": [{"bleu4": bleu4_from_stats(run.stats[inside].sum(0)),
                                 "rouge": float(run.rouge[inside].mean())} for run in runs]})
    return rows


def attach_stats(run):
    """Each sample's BLEU sufficient statistics (for the buckets' corpus BLEU)."""
    hyps = format_for_dataset(run.hyps, run.dataset, is_reference=False)
    refs = format_for_dataset(run.refs, run.dataset, is_reference=True)
    run.stats = bleu_sentence_stats(hyps, refs)


def check_same_samples(run, baseline):
    """A ReportError when the baseline was scored on other samples or references than the run."""
    if baseline.names != run.names or baseline.refs != run.refs:
        if len(baseline.names) != len(run.names):
            what = f"{len(baseline.names)} {run.split} samples, not {len(run.names)}"
        else:
            k = next(i for i, (a, b, c, d) in enumerate(zip(baseline.names, run.names, baseline.refs, run.refs))
                     if a != b or c != d)
            what = f"sample {k + 1} is {baseline.names[k]!r}, not {run.names[k]!r} (or its reference differs)"
        raise ReportError(f"--baseline {baseline.folder} was evaluated on another {run.split} set ({what}): "
                          "compare runs on the same test set")


def compare(run, baseline, resamples=1000, seed=0):
    """The paired bootstrap of run minus baseline (SLRT_metrics.paired_bootstrap, as `SLRT_metrics.py
    --baseline` computes it on the same files) and the per-sample wins, losses and ties in sentence BLEU."""
    result = paired_bootstrap(baseline.hyps, run.hyps, run.refs, run.dataset, resamples, seed)
    delta = run.bleu - baseline.bleu
    result["sentence_bleu"] = {"wins": int((delta > 0).sum()), "losses": int((delta < 0).sum()),
                               "ties": int((delta == 0).sum())}
    return result


def find_extra(folder, name):
    """A file the other scripts write into a run folder (or None)."""
    path = os.path.join(folder, name)
    return path if os.path.isfile(path) else None


def read_part_importance(folder):
    """part_importance/part_importance.json of the run, or None."""
    path = find_extra(folder, os.path.join("part_importance", "part_importance.json"))
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)

"""What each body part contributes to a trained model's translations, measured by occlusion.

    python script/part_importance.py --finetune out/demo/model --dataset Demo --split test --output_dir out/demo/parts
    deepspeed --num_gpus 4 script/part_importance.py --finetune ... (the split's batches dealt out, as evaluation)

The split is translated once as it is, then once per part with that part removed, with the same beam search:
  missing   its points' confidence set to 0 before normalisation: the normaliser and the encoder see what they
            see for a part the pose estimator did not detect (a missing body leaves fewer than 4 confident body
            points, so the whole sample becomes zeros: the body is the frame of reference of every other part);
  zeroed    the part's ST-GCN features (B, T, 256) set to 0 where the encoder concatenates them for mT5 (the
            hands and the face still read the body's anchor node: only the part's own channel goes).
drop = score(as it is) - score(part removed), in BLEU-4 and ROUGE-L points: corpus level with a paired bootstrap
95 % interval (SLRT_metrics.paired_bootstrap, Koehn 2004), and per sample (smoothed sentence BLEU, ROUGE-L F).
For a Geo-Sign model, the branch's part weights w_p = softmax_p d_c(0, h_p) of each sample (as it is) are kept
beside the drops, with their Spearman rank correlation with the per-sample drops: do the weights say which
part matters? Writes part_importance.json and part_importance.png in --output_dir.
"""
import argparse
import contextlib
import json
import math
import os
import sys
import types

import numpy as np
import torch
from tqdm import tqdm

import models
import model_io
import utils
from atomic import atomic_open, atomic_path
from datasets import PART_INDICES, PoseDataset
from report_data import sentence_scores

PART_NAMES = {"body": "body", "left": "left hand", "right": "right hand", "face_all": "face"}
MEASURES = ("missing", "zeroed")
METRICS = ("bleu4", "rouge")


def get_args_parser():
    p = argparse.ArgumentParser("Part importance by occlusion")
    p.add_argument("--finetune", required=True, help="checkpoint (.pth) or model folder")
    p.add_argument("--dataset", default=None, help="default: the dataset the model was trained on")
    p.add_argument("--split", default="test", choices=["dev", "test"])
    p.add_argument("--output_dir", required=True, help="where part_importance.json and .png go")
    p.add_argument("--mt5_path", default=None, help="for a .pth: the mT5 it was trained with (default: its saved one)")
    p.add_argument("--label_path", default=None, help="overrides config.py's label file of the split")
    p.add_argument("--pose_dir", default=None, help="overrides config.pose_dirs[dataset]")
    p.add_argument("--batch_size", type=int, default=8, help="per process")
    p.add_argument("--num_beams", type=int, default=4)
    p.add_argument("--max_tgt_len", type=int, default=100, help="new tokens at generation")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")
    return p


def missing_part_dataset(dataset, part):
    """The dataset's items with `part` undetected (PoseDataset's missing_parts); otherwise its own (same frames)."""
    return PoseDataset(dataset.dataset_name, dataset.phase, dataset.samples, dataset.max_length,
                       dataset.skip_bad_samples, missing_parts=(part,))


@contextlib.contextmanager
def zeroed_features(part):
    """While the block runs, the model's encoder returns `part`'s ST-GCN features as zeros (models.encode_parts,
    which Uni_Sign.encode_pose calls, wrapped); restored afterwards, whatever happens."""
    original = models.encode_parts

    def encode_without(*args, **kwargs):
        features = original(*args, **kwargs)
        features[part] = torch.zeros_like(features[part])
        return features
    models.encode_parts = encode_without
    try:
        yield
    finally:
        models.encode_parts = original


def spearman(a, b, tolerance=1e-4):
    """Spearman's rank correlation of two equal-length vectors (average ranks for ties); nan when either spans
    less than `tolerance` (no ranking to compare: saturated part weights are equal up to float32 noise)."""
    from scipy.stats import rankdata
    if np.ptp(a) < tolerance or np.ptp(b) < tolerance:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def weight_agreement(weights, drops):
    """How well the part weights rank the parts as the drops do. weights, drops: (N, 4) in PART_INDICES order.
    per_sample: the mean over samples of Spearman(w_i, drop_i) across the 4 parts (samples whose drops are all
    equal, or whose weights are, have no ranking and are left out); of_means: Spearman of the mean weights and
    the mean drops."""
    per_sample = [spearman(w, d) for w, d in zip(weights, drops)]
    ranked = [r for r in per_sample if not math.isnan(r)]
    return {"per_sample_mean": float(np.mean(ranked)) if ranked else None, "samples_ranked": len(ranked),
            "of_means": _or_none(spearman(weights.mean(0), drops.mean(0)))}


def _or_none(value):
    return None if math.isnan(value) else value


@torch.no_grad()
def part_weights(model, loader):
    """{name: [w_body, w_left, w_right, w_face]} of this rank's batches, all ranks gathered."""
    mine = {}
    for batch in loader:
        if batch["name"]:
            weights = model.hyperbolic_points(batch)["weights"].float().cpu().tolist()
            mine.update(zip(batch["name"], weights))
    gathered = {}
    for part in utils.gather_objects(mine):
        gathered.update(part)
    return gathered


def drop_summary(full, occluded, refs, dataset_name, resamples, seed):
    """The corpus drop (full - occluded) of BLEU-4 and ROUGE-L with its paired bootstrap interval and p-value,
    and the per-sample drops."""
    from SLRT_metrics import paired_bootstrap
    boot = paired_bootstrap(full.hyps, occluded.hyps, refs, dataset_name, resamples, seed)
    summary = {"scores": boot["system"]}
    for metric in METRICS:  # the bootstrap gives occluded - full: negate it, the interval's ends swap
        low, high = boot[metric]["ci95"]
        summary[metric] = {"drop": 0.0 - boot[metric]["difference"], "ci95": [0.0 - high, 0.0 - low],
                           "p_value": boot[metric]["p_value"]}  # 0.0 - x: no -0.0 for an unchanged score
    bleu, rouge = sentence_scores(occluded.hyps, refs, dataset_name)
    summary["per_sample"] = {"bleu": (full.bleu - bleu).tolist(), "rouge": (full.rouge - rouge).tolist()}
    return summary


def translate(model, loader, args):
    """fine_tuning.evaluate on one loader: the split's names, predictions and references in dataset order, with
    their per-sample scores."""
    from fine_tuning import evaluate
    _, predictions = evaluate(model, loader, "SLT", args.num_beams, args.max_tgt_len)
    bleu, rouge = sentence_scores(predictions.hyps, predictions.refs, loader.dataset.dataset_name)
    return types.SimpleNamespace(names=predictions.names, hyps=predictions.hyps, refs=predictions.refs,
                                 bleu=bleu, rouge=rouge)


def measure(model, dataset, collator, args):
    """Translate the split as it is and with each part removed both ways; returns the JSON-ready result."""
    from fine_tuning import build_loader
    loader_args = argparse.Namespace(batch_size=args.batch_size, num_workers=args.num_workers, seed=0)
    loader = build_loader(dataset, collator, loader_args, train=False)
    conditions = [(m, p) for m in MEASURES for p in PART_INDICES]
    with tqdm(total=1 + len(conditions), desc="conditions", disable=not utils.is_main_process(), position=1) as bar:
        full = translate(model, loader, args)
        bar.update()
        results = {measure: {} for measure in MEASURES}
        for how, part in conditions:
            if how == "missing":
                occluded = translate(model, build_loader(missing_part_dataset(dataset, part), collator, loader_args,
                                                         train=False), args)
            else:
                with zeroed_features(part):
                    occluded = translate(model, loader, args)
            results[how][part] = drop_summary(full, occluded, full.refs, dataset.dataset_name, args.resamples,
                                              args.seed)
            bar.update()
    result = {"samples": len(full.names), "names": full.names, "references": full.refs, "predictions": full.hyps,
              "sentence_bleu": full.bleu.tolist(), "sentence_rouge": full.rouge.tolist(),
              "resamples": args.resamples, "seed": args.seed, "drops": results}
    if model.config.use_hyperbolic:
        weights = part_weights(model, loader)
        matrix = np.array([weights[name] for name in full.names])
        result["part_weights"] = {"per_sample": matrix.tolist(),
                                  "mean": dict(zip(PART_INDICES, matrix.mean(0).tolist()))}
        result["weight_agreement"] = {
            how: {metric: weight_agreement(matrix, np.array([results[how][p]["per_sample"][key] for p in PART_INDICES]).T)
                  for metric, key in (("bleu4", "bleu"), ("rouge", "rouge"))} for how in MEASURES}
    return result


def plot(result, path, title):
    """Bar plot: per part, the BLEU-4 and ROUGE-L drop of each measure with its 95 % interval; the mean part
    weights (Geo-Sign) in a panel beside it. Written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = list(PART_INDICES)
    weights = result.get("part_weights")
    fig, axes = plt.subplots(1, 3 if weights else 2, figsize=(12 if weights else 8.5, 3.6))
    x = np.arange(len(parts))
    for ax, metric, name in zip(axes, METRICS, ("BLEU-4", "ROUGE-L")):
        for k, (how, colour) in enumerate(zip(MEASURES, ("#0072B2", "#E69F00"))):
            rows = [result["drops"][how][p][metric] for p in parts]
            drop = np.array([r["drop"] for r in rows])
            err = np.abs(np.array([r["ci95"] for r in rows]).T - drop)
            ax.bar(x + (k - 0.5) * 0.38, drop, 0.38, yerr=err, capsize=3, color=colour,
                   label=f"part {how}", error_kw={"lw": 0.8})
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(x, [PART_NAMES[p] for p in parts])
        ax.set_title(f"{name} drop (95 % interval)", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(frameon=False, fontsize=8)
    if weights:
        ax = axes[2]
        ax.bar(x, [weights["mean"][p] for p in parts], 0.6, color="0.55")
        ax.axhline(0.25, color="0.3", lw=0.8, ls=(0, (4, 3)))
        ax.set_xticks(x, [PART_NAMES[p] for p in parts])
        ax.set_title("mean part weight $w_p$ (dashed: uniform)", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def print_table(result):
    print(f"{result['samples']} samples; drop = as it is - part removed (95 % paired bootstrap interval)")
    for how in MEASURES:
        for part in PART_INDICES:
            row = result["drops"][how][part]
            cells = "  ".join(f"{m} {row[m]['drop']:+6.2f} [{row[m]['ci95'][0]:+6.2f}, {row[m]['ci95'][1]:+6.2f}]"
                              for m in METRICS)
            weight = result.get("part_weights", {}).get("mean", {}).get(part)
            print(f"  {how:8s}{PART_NAMES[part]:11s}{cells}" + (f"  weight {weight:.3f}" if weight is not None else ""))
    for how, by_metric in result.get("weight_agreement", {}).items():
        rho = by_metric["bleu4"]["per_sample_mean"]
        print(f"  weights vs BLEU drops ({how}): mean per-sample Spearman "
              + ("n/a (the weights or the drops rank no part)" if rho is None else f"{rho:+.2f}"))


def main(args):
    from data_config import DataConfig
    from datasets import PoseCollator, build_dataset
    utils.silence_known_notices()
    if args.batch_size < 1 or args.num_beams < 1 or args.resamples < 1:
        utils.fail(f"--batch_size, --num_beams and --resamples must be at least 1 (got {args.batch_size}, "
                   f"{args.num_beams}, {args.resamples})")
    utils.ensure_writable_dir(args.output_dir, "--output_dir")  # before the model runs, not after
    if "RANK" in os.environ:  # started by a launcher: the split's batches are dealt out to the ranks
        utils.init_distributed()
    device = f"cuda:{utils.local_rank()}" if torch.cuda.is_available() else "cpu"
    read = model_io.read_model(args.finetune)
    model = models.Uni_Sign.from_pretrained(args.finetune, args.mt5_path, device, read=read)
    dataset_name = args.dataset or read["args"].get("dataset")
    if not dataset_name:
        raise model_io.ModelFileError(f"{args.finetune} does not say its dataset: pass --dataset")
    settings = DataConfig.from_args({**read["args"], "task": "SLT", "skip_bad_samples": False})
    dataset = build_dataset(dataset_name, args.split, settings, label_path=args.label_path, pose_dir=args.pose_dir)
    collator = PoseCollator(model.mt5_tokenizer, dataset_name)
    result = measure(model, dataset, collator, args)
    if not utils.is_main_process():
        return
    result.update(model=args.finetune, dataset=dataset_name, split=args.split, num_beams=args.num_beams)
    with atomic_open(os.path.join(args.output_dir, "part_importance.json")) as f:
        json.dump(result, f, ensure_ascii=False, indent=1)
    title = f"{os.path.basename(os.path.normpath(args.finetune))}: {dataset_name} {args.split}, {result['samples']} samples"
    plot(result, os.path.join(args.output_dir, "part_importance.png"), title)
    print_table(result)
    print(f"written: {os.path.join(args.output_dir, 'part_importance.json')} and part_importance.png")


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    try:
        main(parsed)
    except (FileNotFoundError, ValueError, model_io.ModelFileError) as err:  # BadSampleError, LabelFileError
        utils.fail(str(err))
    finally:
        utils.freeze_long_lived_objects()  # a quick exit

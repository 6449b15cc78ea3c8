"""What a pose dataset holds, before anyone trains on it: layout, frames, people, and how much of each part the
model will see. Most reproduction failures start here (frame counts that do not match the labels, several
people detected, another estimator's keypoints).

    python script/inspect_poses.py FILE_OR_DIR [--labels LABEL_FILE [--dataset NAME]] [--compare DIR2]
        [--person 0] [--threshold 0.3] [--json]

Per pose file (.pkl or .pose, searched recursively) and in summary: the layout, frames, fps, people per frame
(.pose files store them; a pickle's first person is what is read), and per part (body, left, right, face_all:
the points the model reads) the mean confidence, the fraction of points missing (confidence 0, or a point the
layout lacks) or at or under the threshold, and the frames where no point is over it. --labels: the label
entries without a pose file, and the frames stored against the labels' `length` (PHOENIX-2014T's). --compare:
two extractions of the same videos (files matched by their path without extension), per part the mean
distance between normalised keypoints found in both.
"""
import argparse
import json
import os
import sys

import numpy as np

import datasets
import pose_files
from data_config import PHASES, DataConfig
import utils
from safe_pickle import safe_pickle_load

POSE_FILE_EXTENSIONS = (".pkl", pose_files.POSE_EXTENSION)


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a pose file or a folder of them")
    p.add_argument("--labels", default=None, help="a label file whose entries the folder should hold")
    p.add_argument("--dataset", default="Phoenix2014T", help="the label file's dataset (its format and layout)")
    p.add_argument("--phase", default="dev", choices=PHASES, help="the label file's split")
    p.add_argument("--compare", default=None, metavar="DIR2", help="another extraction of the same videos")
    p.add_argument("--person", type=int, default=0, help="which stored person of a .pose file (0: the first)")
    p.add_argument("--threshold", type=float, default=datasets.CONFIDENCE_THRESHOLD,
                   help="points scored at or under it count as not found (default: the model's)")
    p.add_argument("--json", action="store_true", help="one JSON object (files, summary) instead of tables")
    return p


def find_pose_files(path):
    """{relative path without extension: path} of the pose files under `path` (or of the file itself)."""
    if os.path.isfile(path):
        return {os.path.splitext(os.path.basename(path))[0]: path}
    found = {}
    for folder, subfolders, files in os.walk(path):
        subfolders.sort()
        for name in sorted(files):
            if name.endswith(POSE_FILE_EXTENSIONS):
                full = os.path.join(folder, name)
                found.setdefault(os.path.splitext(os.path.relpath(full, path))[0], full)
    return found


def read(path, person=0):
    """(keypoints, scores, layout, fps, people per frame or None) of a pickle or a .pose file (its `person`)."""
    if path.endswith(pose_files.POSE_EXTENSION):
        try:
            record = pose_files.read_pose_file(path, person=person, count_people=True)
        except pose_files.PoseFileError as error:
            raise datasets.BadSampleError(str(error)) from error
        return record.keypoints, record.scores, record.layout, record.fps, record.people
    keypoints, scores = datasets.load_pose(path)
    return keypoints, scores, "coco_wholebody_133 (pickle)", None, None


def inspect_file(path, threshold, person=0):
    """The per-file report (a dict); {"file", "error"} for a file that cannot be read."""
    try:
        keypoints, scores, layout, fps, people = read(path, person)
    except datasets.BadSampleError as error:
        return {"file": path, "error": str(error)}
    parts = {}
    seen = np.zeros(len(scores), dtype=bool)
    for part, indices in datasets.PART_INDICES.items():
        confidence = scores[:, indices]
        found = confidence > threshold
        seen |= found.any(axis=1)
        parts[part] = {"mean_confidence": float(confidence.mean()), "missing": float((confidence == 0).mean()),
                       "under_threshold": float((~found).mean())}
    return {"file": path, "layout": layout, "frames": len(scores), "fps": fps,
            "people_max": None if people is None else int(people.max()),
            "frames_with_several_people": None if people is None else int((people > 1).sum()),
            "frames_with_nobody": int((~seen).sum()), "parts": parts}


def check_labels(files, args):
    """Label entries without a pose file, and stored frames against the labels' `length` where they give one."""
    folder = args.path if os.path.isdir(args.path) else os.path.dirname(args.path)
    try:
        dataset = datasets.build_dataset(args.dataset, args.phase, DataConfig(), label_path=args.labels,
                                         pose_dir=folder)
    except (datasets.LabelFileError, FileNotFoundError, ValueError) as error:
        utils.fail(f"--labels {args.labels}: {error}")
    samples = [dataset.samples[i] for i in range(len(dataset))]
    missing = [s["name"] for s in samples if not os.path.exists(s["pose_path"])]
    lengths = _label_lengths(args.labels)
    frames = {os.path.splitext(os.path.relpath(r["file"], folder))[0]: r.get("frames") for r in files}
    mismatched = [{"name": name, "label_length": length, "frames": frames[name]}
                  for name, length in lengths.items() if frames.get(name) is not None and frames[name] != length]
    return {"entries": len(samples), "without_pose_file": missing, "length_mismatches": mismatched}


def _label_lengths(label_path):
    """name -> length of a gzip-pickle label file whose entries give one (PHOENIX-2014T's), else {}."""
    import gzip
    if label_path.endswith(".csv"):
        return {}
    with gzip.open(label_path, "rb") as f:
        labels = safe_pickle_load(f)
    return {label["name"]: label["length"] for label in labels.values()
            if isinstance(label, dict) and isinstance(label.get("length"), int)}


def compare(files, other, threshold):
    """Per part, the mean distance between the normalised keypoints both extractions found (over the files
    both hold, frames up to the shorter one)."""
    sums = {part: [0.0, 0] for part in datasets.PART_INDICES}
    shared = sorted(set(files) & set(other))
    for name in shared:
        try:
            first, second = (read(path)[:2] for path in (files[name], other[name]))
        except datasets.BadSampleError:
            continue  # reported in the per-file table
        length = min(len(first[0]), len(second[0]))
        parts = [datasets.normalise_pose(k[:length], s[:length]) for k, s in (first, second)]
        for part in sums:
            both = (parts[0][part][..., 2] > threshold) & (parts[1][part][..., 2] > threshold)
            distance = np.linalg.norm(parts[0][part][..., :2] - parts[1][part][..., :2], axis=-1)
            sums[part][0] += float(distance[both].sum())
            sums[part][1] += int(both.sum())
    return {"files_compared": len(shared), "only_in_first": len(set(files) - set(other)),
            "only_in_second": len(set(other) - set(files)),
            "mean_distance": {part: (total / count if count else None) for part, (total, count) in sums.items()}}


def summarise(reports):
    good = [r for r in reports if "error" not in r]
    summary = {"files": len(reports), "unreadable": len(reports) - len(good),
               "layouts": sorted({r["layout"] for r in good}), "frames": sum(r["frames"] for r in good),
               "frames_with_nobody": sum(r["frames_with_nobody"] for r in good)}
    if good:
        summary["parts"] = {part: {key: float(np.mean([r["parts"][part][key] for r in good]))
                                   for key in good[0]["parts"][part]} for part in datasets.PART_INDICES}
    return summary


def print_tables(reports, summary, extra):
    print(f"{'file':40s} {'layout':28s} {'frames':>6s} {'fps':>5s} {'people':>6s} {'nobody':>6s}  "
          + "  ".join(f"{part + ' conf/miss/low':>22s}" for part in datasets.PART_INDICES))
    for r in reports:
        name = os.path.basename(r["file"])[-40:]
        if "error" in r:
            print(f"{name:40s} error: {r['error']}")
            continue
        people = "-" if r["people_max"] is None else str(r["people_max"])
        fps = "-" if r["fps"] is None else f"{r['fps']:g}"
        cells = "  ".join(f"{p['mean_confidence']:6.2f}/{p['missing']:6.1%}/{p['under_threshold']:6.1%}"
                          for p in r["parts"].values())
        print(f"{name:40s} {r['layout']:28s} {r['frames']:6d} {fps:>5s} {people:>6s} {r['frames_with_nobody']:6d}  {cells}")
    print(f"summary: {summary['files']} files ({summary['unreadable']} unreadable), layouts "
          f"{', '.join(summary['layouts']) or '-'}, {summary['frames']} frames, {summary['frames_with_nobody']} "
          "with nobody")
    for part, values in summary.get("parts", {}).items():
        print(f"  {part:9s} mean confidence {values['mean_confidence']:.2f}, missing {values['missing']:.1%}, "
              f"at or under the threshold {values['under_threshold']:.1%}")
    for key, value in extra.items():
        print(f"{key}: {json.dumps(value, ensure_ascii=False)}")


def main(args):
    from tqdm import tqdm
    if not os.path.exists(args.path):
        utils.fail(f"{args.path}: no such file or folder")
    files = find_pose_files(args.path)
    if not files:
        utils.fail(f"{args.path}: no pose files (.pkl, .pose) in it")
    reports = [inspect_file(path, args.threshold, args.person)
               for path in tqdm(files.values(), desc="pose files", disable=len(files) < 50 or args.json)]
    extra = {}
    if args.labels:
        extra["labels"] = check_labels(reports, args)
    if args.compare:
        if not os.path.isdir(args.compare):
            utils.fail(f"--compare {args.compare}: no such folder")
        extra["compare"] = compare(files, find_pose_files(args.compare), args.threshold)
    summary = summarise(reports)
    if args.json:
        json.dump({"files": reports, "summary": summary, **extra}, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print_tables(reports, summary, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))

"""Label files: a split's sample list (a sample_index.SampleIndex, in file order) from CSL-Daily-style gzip pickles
(PHOENIX-2014T's too), CSL-News's JSON list (its last 1 % held out) or PHOENIX-2014-T's own corpus CSV
(phoenix_labels.py). Pickles are read by safe_pickle.py's unpickler, which runs no code; every unusable file is a
LabelFileError naming it and the fix. datasets.build_dataset reads a split with read_labels."""
import csv
import functools
import gzip
import os
import pickle
import sys

import phoenix_labels
import pose_files
from safe_pickle import UnsafePickleError, safe_pickle_load
from sample_index import (LabelFileError, SampleIndex, StringTableBuilder, json_array_blocks, refuse_duplicate_names,
                          string_table)

CSL_NEWS_TRAIN_FRACTION = 0.99
LABEL_FORMAT = ("a gzip-compressed pickle of a dict name -> {'name', 'video_path', 'text'[, 'gloss']} (CSL-Daily "
                "style; PHOENIX-2014T's {'name', 'gloss', 'text', 'length', 'imgs_path'} find poses by 'name')")
NEWS_FORMAT = "a JSON list of {'video', 'pose', 'text'} (CSL-News style)"


def read_labels(dataset_name, phase, label_path, pose_dir, task):
    """The SampleIndex of one phase, in file order; LabelFileError for an unusable label file."""
    if os.path.getsize(label_path) == 0:
        raise LabelFileError(f"{label_path}: the {phase} label file is empty (0 bytes): expected "
                             f"{NEWS_FORMAT if dataset_name == 'CSL_News' else LABEL_FORMAT}; copy it again "
                             f"or point --{phase}_label_path at the right file")
    if dataset_name == "CSL_News":  # the last 1 % is dev (and test)
        if task == "CSLR":
            raise LabelFileError(f"{label_path}: CSL-News has no glosses, which --task CSLR trains on: pretrain "
                                 "with --task SLT (its default)")
        index = _read_news_index(label_path, os.path.getsize(label_path), os.path.getmtime(label_path), pose_dir)
        split = int(len(index) * CSL_NEWS_TRAIN_FRACTION)
        samples = index.slice(0, split) if phase == "train" else index.slice(split, len(index))
    elif label_path.endswith(".csv"):
        samples = _read_corpus_csv(label_path, phase, pose_dir, task)
    else:
        samples = _read_pickle_labels(label_path, pose_dir, task)
    if len(samples) == 0:
        raise LabelFileError(f"{label_path}: no {phase} samples in it (an empty label list): there is nothing to "
                             f"{'train on' if phase == 'train' else 'score'}; point --{phase}_label_path at a label "
                             "file with entries")
    if phase != "train":  # predictions are matched to references by name
        refuse_duplicate_names(samples, label_path, phase)
    return samples


@functools.lru_cache(maxsize=2)
def _read_news_index(label_path, size, mtime, pose_dir):
    """The whole CSL-News list as one SampleIndex, parsed once per process (dev and train slice it; size and
    mtime in the key re-read a changed file). Streamed: memory is the index plus one block of entries."""
    poses, texts, count = StringTableBuilder(), StringTableBuilder(), 0
    try:
        for block in json_array_blocks(label_path):
            block_poses, block_texts = [entry["pose"] for entry in block], [entry["text"] for entry in block]
            if set(map(type, block_poses)) != {str} or set(map(type, block_texts)) != {str}:
                raise TypeError("'pose' and 'text' must be strings")
            empty = next((i for i, text in enumerate(block_texts) if not text.strip()), None)
            if empty is not None:  # a clip with nothing to learn: the target would be </s> alone
                raise ValueError(f"entry {count + empty} (pose {block_poses[empty]!r}) has an empty 'text'")
            poses.add(block_poses)
            texts.add(block_texts)
            count += len(block)
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise LabelFileError(f"{label_path}: expected {NEWS_FORMAT} ({type(error).__name__}: {error}); "
                             "fix or replace the file") from error
    return SampleIndex(poses.build(), texts.build(), pose_dir)


def _read_pickle_labels(label_path, pose_dir, task):
    try:
        with gzip.open(label_path, "rb") as f:
            labels = safe_pickle_load(f)
    except UnsafePickleError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise LabelFileError(f"{label_path}: not a readable label file ({type(error).__name__}: {error}); expected "
                             f"{LABEL_FORMAT}") from error
    if not isinstance(labels, dict):
        raise LabelFileError(f"{label_path}: expected {LABEL_FORMAT}, got a {type(labels).__name__}")
    names, poses, texts, without_glosses = [], [], [], []
    for key, label in labels.items():
        glosses = label.get("gloss") if isinstance(label, dict) else None
        glosses = glosses.split() if isinstance(glosses, str) else glosses  # PHOENIX-2014T's: one string
        if task == "CSLR" and not (isinstance(glosses, list) and glosses):
            without_glosses.append(key)
            continue
        try:
            text = " ".join(glosses) if task == "CSLR" else label["text"]
            # PHOENIX-2014T's labels have no video_path: the name (<split>/<video>) is the pose file's path
            phoenix = "video_path" not in label and "imgs_path" in label
            name, video = label["name"], label["name"] if phoenix else label["video_path"]
            if not all(isinstance(value, str) for value in (name, video, text)):
                raise TypeError("'name', 'video_path' and the text must be strings")
            if not text.strip():  # nothing to train on; as a reference, it would score every prediction 0
                raise ValueError(f"its {'gloss list' if task == 'CSLR' else 'text'} is empty")
        except (KeyError, TypeError, ValueError) as error:
            raise LabelFileError(f"{label_path}: entry {key!r} is malformed ({type(error).__name__}: {error}); "
                                 f"expected {LABEL_FORMAT}") from error
        names.append(name)
        poses.append(_pose_file(pose_dir, os.path.splitext(video)[0]))
        texts.append(text)
    if without_glosses:
        _leave_out_entries_without_glosses(label_path, without_glosses, len(labels))
    poses, texts, names = (string_table(column) for column in (poses, texts, names))
    return SampleIndex(poses, texts, pose_dir, names=names)


def _pose_file(pose_dir, stem):
    """A sample's pose file relative to the pose folder: <stem>.pkl, or <stem>.pose where only that exists
    (a pose folder may hold either; one stat per sample, two where the pickle is absent)."""
    pickle_path = stem + ".pkl"
    if os.path.exists(os.path.join(pose_dir, pickle_path)):
        return pickle_path
    pose_path = stem + pose_files.POSE_EXTENSION
    return pose_path if os.path.exists(os.path.join(pose_dir, pose_path)) else pickle_path


def _leave_out_entries_without_glosses(label_path, keys, total):
    """--task CSLR: a label file without glosses is an error; a few entries without them (PHOENIX-2014T's
    redistributed labels have 2 in dev and 2 in test) are left out, named in one warning line."""
    if len(keys) == total:
        raise LabelFileError(f"{label_path}: entry {keys[0]!r} has no gloss list, which --task CSLR trains on: use "
                             "--task SLT for translation, or labels with 'gloss' lists (CSL-Daily's)")
    shown = ", ".join(map(repr, keys[:3])) + (", ..." if len(keys) > 3 else "")
    print(f"warning: {label_path}: {len(keys)} of its {total} entries have no glosses and are left out of "
          f"--task CSLR: {shown}", file=sys.stderr)


def _read_corpus_csv(label_path, phase, pose_dir, task):
    """PHOENIX-2014-T's own annotation file (phoenix_labels.py): pose <pose_dir>/<phase>/<name>.pkl or .pose."""
    try:
        names, texts = phoenix_labels.read_corpus_csv(label_path, phase, task)
    except (ValueError, UnicodeDecodeError, csv.Error) as error:
        raise LabelFileError(f"{label_path}: expected {phoenix_labels.CORPUS_CSV_FORMAT} ({error}); pass the "
                             "corpus's annotations/manual/PHOENIX-2014-T.<split>.corpus.csv") from error
    poses = [_pose_file(pose_dir, name) for name in names]
    poses, texts, names = (string_table(column) for column in (poses, texts, names))
    return SampleIndex(poses, texts, pose_dir, names=names)

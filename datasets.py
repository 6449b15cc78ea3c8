"""Pose datasets: loading, normalisation, frame selection and batching (the format and normalisation: docs/design.md).

Public: build_dataset, PoseDataset, PoseCollator, load_pose, normalise_pose, select_frames, prompt_for,
pose_layout_warning, BadSampleError, LabelFileError. Pickles are read by safe_pickle.py's unpicklers, which run no
code; `.pose` files by pose_files.py; label files by label_files.py.
"""
import functools
import os
import pickle

import numpy as np
import torch

import captions
import config
import label_files
import pose_clips
import pose_files
from data_config import TASKS, DataConfig, data_paths
from safe_pickle import PoseUnpickler, UnsafePickleError, build_frames, load_restricted
from sample_index import LabelFileError  # noqa: F401  (named here too: datasets.LabelFileError)
# the skeleton's definitions, named here too (datasets.PART_INDICES, ...)
from skeleton import NUM_KEYPOINTS, PART_ANCHORS, PART_INDICES  # noqa: F401

CONFIDENCE_THRESHOLD = 0.3
PROMPTS = {"Chinese": "Translate sign language video to Chinese: ",
           "English": "Translate sign language video to English: ",
           "German": "Translate sign language video to German: "}


# All parts' points gathered once, with the column ranges of each part and of the anchors.
_ALL_INDICES = np.concatenate([PART_INDICES[p] for p in PART_INDICES])
_PART_SLICES, _start = {}, 0
for _part, _indices in PART_INDICES.items():
    _PART_SLICES[_part] = slice(_start, _start + len(_indices))
    _start += len(_indices)
_BODY = _PART_SLICES["body"]
# Per kept point, the point it is recentred on (its part's anchor; body points get a placeholder that the
# box corner replaces).
_ANCHOR_POINT = np.concatenate([np.full(len(PART_INDICES[p]), PART_ANCHORS[p] or 0) for p in PART_INDICES])
_IS_BODY = (np.arange(len(_ALL_INDICES)) < _BODY.stop).astype(np.float32)


class BadSampleError(ValueError):
    """A pose or label file that is missing, unreadable or holds unusable data; the message names the file."""


# ----------------------------------------------------------------------------- one pose file
def load_pose(path, frames=None):
    """Read a pose pickle or a `.pose` file (by extension); returns person 0's keypoints (T, 133, 2) and scores
    (T, 133) as float32 arrays (possibly read-only views of the file's bytes: copy before writing to them).
    `.pose` files of other layouts are mapped onto COCO-WholeBody's points by pose_files.py.

    Frames may be a list of per-frame arrays or one array; only frames [start, end) count when given
    (like a slice: an end past the last frame keeps up to the last frame). frames=(start, end): only that clip of
    them, read without the rest of the file where its layout allows (pose_clips.py; captions.py's samples).
    Anything unusable raises BadSampleError naming the file and the problem (UnsafePickleError is never softened).
    """
    if str(path).endswith(pose_files.POSE_EXTENSION):
        return _load_pose_file(path, frames)
    try:
        data = load_restricted(path, PoseUnpickler) if frames is None else pose_clips.read_clip(path, *frames)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise BadSampleError(f"{path}: pose file is missing") from error
    except UnsafePickleError as error:
        if str(path) in str(error):
            raise
        raise UnsafePickleError(f"{path}: {error}") from error
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        if os.path.getsize(path) == 0:
            raise BadSampleError(f"{path}: pose file is empty") from error
        raise BadSampleError(f"{path}: truncated or corrupt pickle ({type(error).__name__}: {error})") from error
    if not isinstance(data, dict) or "keypoints" not in data or "scores" not in data:
        raise BadSampleError(f"{path}: expected a dict with 'keypoints' and 'scores', got {type(data).__name__}"
                             + (f" with keys {sorted(map(str, data))}" if isinstance(data, dict) else ""))
    try:
        keypoints, scores = build_frames(data["keypoints"]), build_frames(data["scores"])
    except (TypeError, ValueError, AttributeError) as error:
        raise BadSampleError(f"{path}: malformed arrays ({type(error).__name__}: {error})") from error
    if len(keypoints) != len(scores):
        raise BadSampleError(f"{path}: {len(keypoints)} keypoint frames but {len(scores)} score frames")
    stored = len(keypoints)
    start, end = data.get("start", 0), data.get("end", stored)
    if start is None:
        start = 0
    if end is None:
        end = len(keypoints)
    if not (isinstance(start, (int, np.integer)) and isinstance(end, (int, np.integer)) and 0 <= start <= end):
        raise BadSampleError(f"{path}: invalid start/end ({start!r}, {end!r}) for {len(keypoints)} frames")
    keypoints, scores = keypoints[start:end], scores[start:end]
    if len(keypoints) == 0:
        raise BadSampleError(f"{path}: no frames (start={start}, end={end}, {stored} stored)")
    keypoints = _first_person(path, "keypoints", keypoints, (NUM_KEYPOINTS, 2))
    scores = _first_person(path, "scores", scores, (NUM_KEYPOINTS,))
    for key, values in (("keypoints", keypoints), ("scores", scores)):
        if not np.isfinite(values).all():
            frames = np.unique(np.nonzero(~np.isfinite(values))[0])
            raise BadSampleError(f"{path}: NaN or inf {key} in frame(s) {frames[:10].tolist()}")
    return keypoints, scores


def load_sample_pose(sample):
    """load_pose of a label entry: its pose file, or only its clip's frames when the entry has a range (a caption
    corpus's clips of a long video)."""
    return load_pose(sample["pose_path"], sample.get("frames"))


def _load_pose_file(path, frames=None):
    """A `.pose` file's person 0, all of it or frames=(start, end) of it (the file is read whole, then cut)."""
    try:
        record = pose_files.read_pose_file(path)
    except pose_files.PoseFileError as error:
        raise BadSampleError(str(error)) from error
    if frames is None:
        return record.keypoints, record.scores
    start, end = frames
    if not 0 <= start < min(end, len(record.keypoints)):
        raise BadSampleError(f"{path}: no frames in the clip [{start}, {end}) of its {len(record.keypoints)}")
    return record.keypoints[start:end], record.scores[start:end]


def _first_person(path, key, frames, point_shape):
    """Frames of shape (P, *point_shape) (P >= 1, may vary per frame) -> person 0's, stacked: (T, *point_shape)."""
    expected = f"(P, {', '.join(map(str, point_shape))})"
    if isinstance(frames, np.ndarray):
        if frames.ndim != 2 + len(point_shape) or frames.shape[2:] != point_shape:
            raise BadSampleError(f"{path}: {key} array has shape {frames.shape}, expected (T, {expected[1:]}")
        if frames.shape[1] == 0:
            raise BadSampleError(f"{path}: {key} has frames with no person")
        return np.asarray(frames[:, 0], dtype=np.float32)
    try:
        people = set(map(len, frames))
        if 0 in people:
            raise BadSampleError(f"{path}: {key} has frames with no person")
        # The usual case, one person in every frame: one concatenation (it also checks ranks and inner shapes).
        stacked = np.concatenate(frames) if people == {1} else np.stack([frame[0] for frame in frames])
        stacked = stacked.astype(np.float32, copy=False)
    except (TypeError, ValueError) as error:
        raise BadSampleError(f"{path}: {key} frames must be arrays of shape {expected} ({error})") from error
    if stacked.shape != (len(frames),) + point_shape:
        raise BadSampleError(f"{path}: {key} frames have shape {stacked.shape[1:]} per person, expected {expected}")
    return stacked


def select_frames(num_frames, max_length, random):
    """Indices of the frames to keep: all when num_frames <= max_length; else max_length distinct sorted ones,
    drawn at random (training: torch's generator, which DataLoader seeds per worker) or evenly spaced."""
    if num_frames <= max_length:
        return np.arange(num_frames)
    if random:
        return np.sort(torch.randperm(num_frames)[:max_length].numpy())
    return _evenly_spaced(num_frames, max_length)


@functools.lru_cache(maxsize=1024)
def _evenly_spaced(num_frames, count):
    """round(linspace(0, num_frames - 1, count)): distinct when num_frames > count; cached and read-only."""
    indices = np.linspace(0, num_frames - 1, count).round().astype(np.int64)
    indices.flags.writeable = False
    return indices


def normalise_pose(keypoints, scores):
    """Parts (T, V, 3) of (x, y, confidence), float32, normalised as docs/design.md describes.

    Body: bbox of the confident (> 0.3) body points over all frames, scale = max(width, height),
    (xs, ys) = ((xmin + xmax - scale) / 2, (ymin + ymax - scale) / 2), xy <- ((xy - (xs, ys)) / scale - 0.5) * 2.
    Hands and face: xy <- (xy - anchor_xy) / scale. All clipped to [-1, 1]; points with confidence <= 0.3
    become (0, 0, 0). Fewer than 4 confident body points (or a zero-size box): the whole sample is zeros.
    """
    # Planar x and y planes (T, 69): contiguous rows keep every numpy op's inner loop long, hence cheap.
    flat = keypoints.reshape(len(keypoints), 2 * NUM_KEYPOINTS)
    confidence = scores.take(_ALL_INDICES, axis=1)
    confident = confidence > CONFIDENCE_THRESHOLD
    planes = [flat.take(2 * _ALL_INDICES + axis, axis=1) for axis in (0, 1)]
    body_confident = confident[:, _BODY]
    body_planes = [plane[:, _BODY][body_confident] for plane in planes]
    if len(body_planes[0]) < 4:
        return _split_parts(np.zeros(confidence.shape + (3,), dtype=np.float32))
    low, high = [p.min() for p in body_planes], [p.max() for p in body_planes]
    scale = float(max(high[0] - low[0], high[1] - low[1]))
    if scale <= 0:
        return _split_parts(np.zeros(confidence.shape + (3,), dtype=np.float32))
    # One affine map per entry: (v - origin) * factor + shift, where the body's origin is the box corner
    # (factor 2 / scale, shift -1) and a hand's or the face's origin is its anchor (factor 1 / scale, shift 0).
    factor = np.where(_IS_BODY, 2.0 / scale, 1.0 / scale).astype(np.float32)
    for axis, plane in enumerate(planes):
        origin = flat.take(2 * _ANCHOR_POINT + axis, axis=1)
        origin[:, _BODY] = (low[axis] + high[axis] - scale) / 2
        plane -= origin
        plane *= factor
        plane -= _IS_BODY
        np.clip(plane, -1.0, 1.0, out=plane)
        plane *= confident
    return _split_parts(np.stack(planes + [confidence * confident], axis=-1))


def _split_parts(parts_xyc):
    return {part: parts_xyc[:, columns] for part, columns in _PART_SLICES.items()}


# ----------------------------------------------------------------------------- the dataset
def prompt_for(dataset_name):
    """The translation prompt in the dataset's language (Chinese for config.chinese_datasets, German for
    config.german_datasets, else English)."""
    if dataset_name in config.german_datasets:
        return PROMPTS["German"]
    return PROMPTS["Chinese" if dataset_name in config.chinese_datasets else "English"]


class PoseDataset(torch.utils.data.Dataset):
    """Items dict(name, pose={part: (T, V, 3) float32 tensor}, text); None for a bad sample when skipping.

    samples: a SampleIndex (what build_dataset gives: compact, shared by forked workers without copies) or
    any sequence of {"name", "pose_path", "text"} dicts. missing_parts: parts (PART_INDICES' names) read as
    undetected, their points' confidence 0 before normalisation, as an estimator reports a part it did not find
    (script/part_importance.py's occlusion).
    """

    def __init__(self, dataset_name, phase, samples, max_length=256, skip_bad_samples=False, missing_parts=()):
        self.dataset_name, self.phase, self.samples = dataset_name, phase, samples
        self.max_length, self.skip_bad_samples = max_length, skip_bad_samples
        self.missing_points = [i for part in missing_parts for i in PART_INDICES[part]]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        try:
            keypoints, scores = load_sample_pose(sample)
        except BadSampleError:
            if self.skip_bad_samples:
                return None
            raise
        frames = select_frames(len(keypoints), self.max_length, random=self.phase == "train")
        if len(frames) < len(keypoints) or self.missing_points:  # take() copies: writable
            keypoints, scores = keypoints.take(frames, axis=0), scores.take(frames, axis=0)
            scores[:, self.missing_points] = 0.0
        parts = normalise_pose(keypoints, scores)
        pose = {part: torch.from_numpy(values) for part, values in parts.items()}
        return {"name": sample["name"], "pose": pose, "text": sample["text"]}


def build_dataset(dataset_name, phase, args, label_path=None, pose_dir=None):
    """The PoseDataset of one phase; label and pose paths default to config.py's (data_config.data_paths). `args`: a
    DataConfig or anything DataConfig.from_args reads."""
    label_path, pose_dir = data_paths(dataset_name, phase, label_path, pose_dir)
    settings = DataConfig.from_args(args)
    task = settings.task
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if captions.is_caption_corpus(dataset_name, label_path):  # long videos cut into clips by timed captions
        samples = captions.read_clip_index(dataset_name, phase, label_path, pose_dir, args)
    else:
        samples = label_files.read_labels(dataset_name, phase, label_path, pose_dir, task)
    return PoseDataset(dataset_name, phase, samples, max_length=settings.max_length,
                       skip_bad_samples=settings.skip_bad_samples)


def pose_layout_warning(dataset, files_looked_at=100):
    """One warning line when the dataset's first `.pose` file (among its first files_looked_at samples) holds
    another estimator's layout than the RTMPose one every model here was trained on, else None."""
    count = min(len(dataset.samples), files_looked_at)
    return pose_files.layout_mismatch_warning(dataset.samples[i]["pose_path"] for i in range(count))


# ----------------------------------------------------------------------------- batching
def pad_with_last_frame(part, length):
    """(T, V, C) -> (length, V, C) by repeating the last frame."""
    missing = length - part.shape[0]
    return part if missing == 0 else torch.cat([part, part[-1:].expand(missing, *part.shape[1:])])


class PoseCollator:
    """Batches dataset items: padded parts, pose/prompt masks, tokenised prompt and targets (pad -> -100)."""

    def __init__(self, tokenizer, dataset_name, max_target_len=50):
        self.tokenizer, self.prompt, self.max_target_len = tokenizer, prompt_for(dataset_name), max_target_len

    def __call__(self, items):
        valid = [item for item in items if item is not None]
        num_skipped = len(items) - len(valid)
        if not valid:
            return {"name": [], "text": [], "num_skipped": num_skipped}
        lengths = torch.tensor([item["pose"]["body"].shape[0] for item in valid])
        longest = int(lengths.max())
        pose = {part: torch.stack([pad_with_last_frame(item["pose"][part], longest) for item in valid])
                for part in PART_INDICES}
        pose_mask = (torch.arange(longest)[None] < lengths[:, None]).long()
        texts = [item["text"] for item in valid]
        prompt = self.tokenizer([self.prompt] * len(valid), padding="longest", return_tensors="pt")
        target = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_target_len,
                                return_tensors="pt")
        labels = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
        return {"name": [item["name"] for item in valid], "pose": pose, "pose_mask": pose_mask,
                "prompt_ids": prompt["input_ids"].long(), "prompt_mask": prompt["attention_mask"].long(),
                "labels": labels.long(), "text": texts, "num_skipped": num_skipped}

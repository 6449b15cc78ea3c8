"""datasets.py: normalisation checked by hand, file formats, frame selection, batching, bad input, safety."""
import gzip
import json
import os
import pickle
import types

import numpy as np
import pytest
import torch

import datasets
from datasets import BadSampleError
import safe_pickle
from safe_pickle import UnsafePickleError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = datasets.PART_INDICES["body"]


def args(**overrides):
    values = dict(max_length=256, task="SLT", skip_bad_samples=False)
    values.update(overrides)
    return types.SimpleNamespace(**values)


def signer_frames(num_frames, seed=0):
    """Plausible (T, 133, 2) keypoints in [0, 1] and (T, 133) scores, every point confident."""
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(0.3, 0.7, (num_frames, 133, 2)).astype(np.float32)
    scores = rng.uniform(0.5, 1.0, (num_frames, 133)).astype(np.float32)
    return keypoints, scores


def write_pose(path, keypoints, scores, as_list=True, **extra):
    """Write in the RTMPose layout: lists of (1, 133, 2) / (1, 133) per frame, or one array per key."""
    if as_list:
        data = {"keypoints": [k[None] for k in keypoints], "scores": [s[None] for s in scores]}
    else:
        data = {"keypoints": keypoints[:, None], "scores": scores[:, None]}
    data.update(extra)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return str(path)


def reference_normalise(keypoints, scores):
    """The pose normalisation written as plain per-point loops, to check the vectorised version against."""
    body_points = [keypoints[t, i] for t in range(len(keypoints)) for i in BODY if scores[t, i] > 0.3]
    parts = {}
    if len(body_points) < 4:
        scale = 0.0
    else:
        body_points = np.array(body_points, dtype=np.float64)
        low, high = body_points.min(0), body_points.max(0)
        scale = (high - low).max()
    for part, indices in datasets.PART_INDICES.items():
        out = np.zeros((len(keypoints), len(indices), 3))
        for t in range(len(keypoints)):
            for v, i in enumerate(indices):
                if scale == 0 or scores[t, i] <= 0.3:
                    continue
                if part == "body":
                    corner = (low + high - scale) / 2
                    xy = ((keypoints[t, i] - corner) / scale - 0.5) * 2
                else:
                    xy = (keypoints[t, i] - keypoints[t, datasets.PART_ANCHORS[part]]) / scale
                out[t, v, :2] = np.clip(xy, -1, 1)
                out[t, v, 2] = scores[t, i]
        parts[part] = out
    return parts


# ----------------------------------------------------------------------------- normalisation
def test_body_box_recentring_by_hand():
    keypoints, scores = np.zeros((1, 133, 2), np.float32), np.ones((1, 133), np.float32)
    # body points spread over x in [0.2, 0.6] (width 0.4) and y in [0.3, 0.5] (height 0.2): scale 0.4,
    # corner xs = (0.2 + 0.6 - 0.4) / 2 = 0.2, ys = (0.3 + 0.5 - 0.4) / 2 = 0.2.
    keypoints[0, BODY] = [[0.2, 0.3], [0.6, 0.5], [0.4, 0.4], [0.3, 0.35], [0.5, 0.45],
                          [0.2, 0.5], [0.6, 0.3], [0.4, 0.3], [0.4, 0.5]]
    keypoints[0, 1] = [0.9, 0.9]  # an eye: not a body part point, must not widen the box
    body = datasets.normalise_pose(keypoints, scores)["body"][0]
    # x: ((x - 0.2) / 0.4 - 0.5) * 2 ; y: ((y - 0.2) / 0.4 - 0.5) * 2
    np.testing.assert_allclose(body[0], [-1.0, -0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(body[1], [1.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(body[2], [0.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(body[3], [-0.5, -0.25, 1.0], atol=1e-6)


def test_hands_and_face_recentred_on_anchor_divided_by_body_scale_and_clipped():
    keypoints, scores = np.zeros((1, 133, 2), np.float32), np.ones((1, 133), np.float32)
    keypoints[0, BODY] = [[0.0, 0.0], [0.5, 0.5]] + [[0.25, 0.25]] * 7   # scale 0.5
    keypoints[0, 91] = [0.3, 0.3]          # left wrist (anchor)
    keypoints[0, 92] = [0.4, 0.2]          # -> (0.1, -0.1) / 0.5 = (0.2, -0.2)
    keypoints[0, 93] = [0.3, 1.0]          # -> (0, 0.7) / 0.5 = 1.4 -> clipped to 1
    keypoints[0, 112] = [0.6, 0.6]         # right wrist
    keypoints[0, 132] = [0.55, 0.65]       # -> (-0.1, 0.1)
    keypoints[0, 53] = [0.25, 0.1]         # face anchor (nose tip), the LAST face_all point
    keypoints[0, 23] = [0.15, 0.1]         # -> (-0.2, 0)
    parts = datasets.normalise_pose(keypoints, scores)
    np.testing.assert_allclose(parts["left"][0, 0], [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(parts["left"][0, 1], [0.2, -0.2, 1], atol=1e-6)
    np.testing.assert_allclose(parts["left"][0, 2], [0.0, 1.0, 1], atol=1e-6)
    np.testing.assert_allclose(parts["right"][0, 20], [-0.1, 0.1, 1], atol=1e-6)
    np.testing.assert_allclose(parts["face_all"][0, 0], [-0.2, 0.0, 1], atol=1e-6)
    np.testing.assert_allclose(parts["face_all"][0, 17], [0.0, 0.0, 1], atol=1e-6)


def test_low_confidence_points_are_zeroed_and_left_out_of_the_box():
    keypoints, scores = signer_frames(3)
    keypoints[1, BODY[0]] = [0.99, 0.01]   # an outlier the detector is unsure of
    scores[1, BODY[0]] = 0.3               # <= thr: not in the box, zeroed
    scores[2, 95] = 0.1
    parts = datasets.normalise_pose(keypoints, scores)
    np.testing.assert_array_equal(parts["body"][1, 0], [0, 0, 0])
    np.testing.assert_array_equal(parts["left"][2, 4], [0, 0, 0])
    confident_body = keypoints[:, BODY][scores[:, BODY] > 0.3]
    expected_scale = (confident_body.max(0) - confident_body.min(0)).max()
    body = parts["body"]
    assert np.abs(body[..., :2]).max() <= 1.0
    # the box is tight: some confident body point reaches +-1 on the longer side
    assert np.isclose(np.abs(body[..., :2]).max(), 1.0, atol=1e-5)
    reference = reference_normalise(keypoints, scores)
    for part in reference:
        np.testing.assert_allclose(parts[part], reference[part], atol=1e-5)
    assert expected_scale > 0


@pytest.mark.parametrize("seed", range(5))
def test_matches_per_point_reference_on_random_poses(seed):
    keypoints, scores = signer_frames(7, seed)
    rng = np.random.default_rng(seed + 100)
    scores[rng.random(scores.shape) < 0.3] = 0.1      # many unconfident points, hands included
    keypoints[rng.random(keypoints.shape[:2]) < 0.05] = 1.0
    reference = reference_normalise(keypoints, scores)
    parts = datasets.normalise_pose(keypoints, scores)
    for part, indices in datasets.PART_INDICES.items():
        assert parts[part].shape == (7, len(indices), 3) and parts[part].dtype == np.float32
        np.testing.assert_allclose(parts[part], reference[part], atol=1e-5)


def test_scale_zero_when_fewer_than_four_confident_body_points():
    keypoints, scores = signer_frames(4)
    scores[:, BODY] = 0.2
    scores[0, BODY[:3]] = 0.9        # only three confident body points in the whole video
    parts = datasets.normalise_pose(keypoints, scores)
    for part in parts.values():
        assert not np.any(part)
    scores[1, BODY[3]] = 0.9         # the fourth: now normalised
    assert np.any(datasets.normalise_pose(keypoints, scores)["left"])


def test_degenerate_box_gives_zeros_not_division_by_zero():
    keypoints, scores = signer_frames(2)
    keypoints[:, BODY] = 0.5
    parts = datasets.normalise_pose(keypoints, scores)
    assert all(not np.any(p) and np.isfinite(p).all() for p in parts.values())


# ----------------------------------------------------------------------------- pose files
def test_multi_person_frames_use_person_zero(tmp_path):
    keypoints, scores = signer_frames(4)
    other = np.full((133, 2), 0.95, np.float32)
    data = {"keypoints": [k[None] for k in keypoints], "scores": [s[None] for s in scores]}
    data["keypoints"][1] = np.stack([keypoints[1], other])
    data["scores"][1] = np.stack([scores[1], np.ones(133, np.float32)])
    data["keypoints"][2] = np.stack([keypoints[2], other, other])
    data["scores"][2] = np.stack([scores[2], scores[2], scores[2]])
    path = tmp_path / "multi.pkl"
    path.write_bytes(pickle.dumps(data))
    loaded_keypoints, loaded_scores = datasets.load_pose(str(path))
    np.testing.assert_array_equal(loaded_keypoints, keypoints)
    np.testing.assert_array_equal(loaded_scores, scores)


@pytest.mark.parametrize("as_list", [True, False])
def test_frames_as_list_or_array_and_start_end(tmp_path, as_list):
    keypoints, scores = signer_frames(10)
    path = write_pose(tmp_path / "a.pkl", keypoints, scores, as_list=as_list, start=2, end=7)
    loaded_keypoints, loaded_scores = datasets.load_pose(path)
    np.testing.assert_array_equal(loaded_keypoints, keypoints[2:7])
    np.testing.assert_array_equal(loaded_scores, scores[2:7])
    path = write_pose(tmp_path / "b.pkl", keypoints, scores, as_list=as_list)
    assert len(datasets.load_pose(path)[0]) == 10


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_protocols_and_numpy1_module_names(tmp_path, protocol):
    keypoints, scores = signer_frames(3)
    data = {"keypoints": [k[None] for k in keypoints], "scores": [s[None] for s in scores]}
    payload = pickle.dumps(data, protocol=protocol)
    if protocol == 2:  # text globals: rewrite to the numpy 1.x module path older files reference
        payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in payload
    path = tmp_path / "p.pkl"
    path.write_bytes(payload)
    np.testing.assert_array_equal(datasets.load_pose(str(path))[0], keypoints)
    assert np.array_equal(safe_pickle.safe_pickle_load(str(path))["keypoints"][1], keypoints[1:2])


def test_float64_and_mixed_dtypes_are_converted(tmp_path):
    keypoints, scores = signer_frames(3)
    data = {"keypoints": [k[None].astype(np.float64) for k in keypoints], "scores": [s[None] for s in scores]}
    data["scores"][1] = data["scores"][1].astype(np.float16)
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(data))
    loaded_keypoints, loaded_scores = datasets.load_pose(str(path))
    assert loaded_keypoints.dtype == np.float32 and loaded_scores.dtype == np.float32
    np.testing.assert_allclose(loaded_scores, scores, atol=1e-3)


# ----------------------------------------------------------------------------- bad input
def bad_file(tmp_path, case):
    keypoints, scores = signer_frames(5)
    path = tmp_path / f"{case}.pkl"
    if case == "missing":
        return str(path), "missing"
    if case == "empty":
        path.write_bytes(b"")
        return str(path), "empty"
    if case == "truncated":
        payload = open(write_pose(path, keypoints, scores), "rb").read()
        path.write_bytes(payload[: len(payload) // 2])
        return str(path), "truncated"
    if case == "not_a_pickle":
        path.write_bytes(b"this is not a pickle at all")
        return str(path), "corrupt"
    if case == "not_a_dict":
        path.write_bytes(pickle.dumps([1, 2, 3]))
        return str(path), "expected a dict"
    if case == "missing_scores":
        path.write_bytes(pickle.dumps({"keypoints": [k[None] for k in keypoints]}))
        return str(path), "'scores'"
    if case == "wrong_point_count":
        return write_pose(path, keypoints[:, :100], scores[:, :100]), "shape"
    if case == "wrong_rank":
        path.write_bytes(pickle.dumps({"keypoints": list(keypoints), "scores": list(scores)}))
        return str(path), "shape"
    if case == "frame_count_mismatch":
        return write_pose(path, keypoints, scores[:3]), "5 keypoint frames but 3 score frames"
    if case == "nan":
        keypoints[3, 100, 0] = np.nan
        return write_pose(path, keypoints, scores), "NaN or inf keypoints in frame(s) [3]"
    if case == "inf":
        scores[1, 7] = np.inf
        return write_pose(path, keypoints, scores), "NaN or inf scores in frame(s) [1]"
    if case == "zero_frames":
        return write_pose(path, keypoints[:0], scores[:0]), "no frames"
    if case == "start_equals_end":
        return write_pose(path, keypoints, scores, start=3, end=3), "no frames"
    if case == "bad_start":
        return write_pose(path, keypoints, scores, start=-2, end=3), "start/end"
    if case == "no_person":
        path.write_bytes(pickle.dumps({"keypoints": [np.zeros((0, 133, 2), np.float32)] * 2,
                                       "scores": [np.zeros((0, 133), np.float32)] * 2}))
        return str(path), "no person"
    if case == "strings":
        path.write_bytes(pickle.dumps({"keypoints": ["a", "b"], "scores": ["c", "d"]}))
        return str(path), "keypoints"
    raise AssertionError(case)


BAD_CASES = ["missing", "empty", "truncated", "not_a_pickle", "not_a_dict", "missing_scores", "wrong_point_count",
             "wrong_rank", "frame_count_mismatch", "nan", "inf", "zero_frames", "start_equals_end", "bad_start",
             "no_person", "strings"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_pose_file_names_file_and_problem(tmp_path, case):
    path, problem = bad_file(tmp_path, case)
    with pytest.raises(BadSampleError) as error:
        datasets.load_pose(path)
    assert path in str(error.value) and problem in str(error.value)


def make_dataset(tmp_path, paths, skip):
    samples = [{"name": os.path.basename(p), "pose_path": p, "text": "你好"} for p in paths]
    return datasets.PoseDataset("CSL_Daily", "dev", samples, skip_bad_samples=skip)


def test_bad_sample_raises_or_is_skipped_and_counted(tmp_path, tiny_mt5_path):
    from transformers import AutoTokenizer
    good = write_pose(tmp_path / "good.pkl", *signer_frames(4))
    bad, _ = bad_file(tmp_path, "nan")
    with pytest.raises(BadSampleError, match="nan.pkl"):
        make_dataset(tmp_path, [good, bad], skip=False)[1]
    dataset = make_dataset(tmp_path, [good, bad], skip=True)
    assert dataset[1] is None
    collate = datasets.PoseCollator(AutoTokenizer.from_pretrained(tiny_mt5_path), "CSL_Daily")
    batch = collate([dataset[0], dataset[1]])
    assert batch["name"] == ["good.pkl"] and batch["num_skipped"] == 1 and batch["pose"]["body"].shape[0] == 1
    empty = collate([dataset[1]])
    assert empty["name"] == [] and empty["num_skipped"] == 1


# ----------------------------------------------------------------------------- safety
class _PlantedPayload:
    """Pickles as a call to os.mkdir: loading it with plain pickle would create the marker folder."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = str(tmp_path / "payload_ran")
    keypoints, scores = signer_frames(2)
    pose_path = tmp_path / "evil_pose.pkl"
    pose_path.write_bytes(pickle.dumps({"keypoints": [k[None] for k in keypoints], "scores": [s[None] for s in scores],
                                        "extra": _PlantedPayload(marker)}))
    label_path = tmp_path / "labels.dev"
    with gzip.open(label_path, "wb") as f:
        pickle.dump({"x": {"name": "x", "gloss": [], "text": _PlantedPayload(marker), "video_path": "x.mp4"}}, f)
    for load in (lambda: datasets.load_pose(str(pose_path)), lambda: safe_pickle.safe_pickle_load(str(pose_path))):
        with pytest.raises(UnsafePickleError) as error:
            load()
        assert "posix.mkdir" in str(error.value) and "evil_pose.pkl" in str(error.value)
    os.makedirs(tmp_path / "poses")
    with pytest.raises(UnsafePickleError, match="mkdir"):
        datasets.build_dataset("CSL_Daily", "dev", args(), label_path=str(label_path), pose_dir=str(tmp_path / "poses"))
    assert not os.path.exists(marker)
    assert isinstance(UnsafePickleError("x"), pickle.UnpicklingError)


def test_skip_bad_samples_never_softens_an_unsafe_pickle(tmp_path):
    marker = str(tmp_path / "ran")
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"keypoints": _PlantedPayload(marker), "scores": []}))
    with pytest.raises(UnsafePickleError):
        make_dataset(tmp_path, [str(path)], skip=True)[0]
    assert not os.path.exists(marker)


# ----------------------------------------------------------------------------- frame selection
def test_eval_frame_selection_is_deterministic_and_evenly_spaced():
    first = datasets.select_frames(300, 256, random=False)
    second = datasets.select_frames(300, 256, random=False)
    np.testing.assert_array_equal(first, second)
    assert len(first) == 256 and len(set(first.tolist())) == 256 and np.all(np.diff(first) > 0)
    assert first[0] == 0 and first[-1] == 299
    np.testing.assert_array_equal(datasets.select_frames(5, 256, random=True), np.arange(5))


def test_train_frame_selection_is_random_distinct_sorted_and_seedable():
    torch.manual_seed(0)
    a = datasets.select_frames(300, 256, random=True)
    b = datasets.select_frames(300, 256, random=True)
    torch.manual_seed(0)
    np.testing.assert_array_equal(datasets.select_frames(300, 256, random=True), a)
    assert not np.array_equal(a, b)
    for chosen in (a, b):
        assert len(chosen) == 256 and np.all(np.diff(chosen) > 0) and chosen.min() >= 0 and chosen.max() < 300


def test_dataset_item_respects_max_length_and_phase(tmp_path):
    path = write_pose(tmp_path / "long.pkl", *signer_frames(40))
    samples = [{"name": "long", "pose_path": path, "text": "t"}]
    dev = datasets.PoseDataset("CSL_Daily", "dev", samples, max_length=16)
    first, second = dev[0], dev[0]
    assert first["pose"]["body"].shape == (16, 9, 3)
    assert all(torch.equal(first["pose"][p], second["pose"][p]) for p in first["pose"])
    train = datasets.PoseDataset("CSL_Daily", "train", samples, max_length=16)
    assert train[0]["pose"]["left"].shape == (16, 21, 3)
    assert train[0]["pose"]["face_all"].dtype == torch.float32


# ----------------------------------------------------------------------------- batching
def test_padding_repeats_last_frame_and_masks(tmp_path, tiny_mt5_path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny_mt5_path)
    short = write_pose(tmp_path / "short.pkl", *signer_frames(3, seed=1))
    long = write_pose(tmp_path / "long.pkl", *signer_frames(5, seed=2))
    samples = [{"name": "short", "pose_path": short, "text": "你好！"},
               {"name": "long", "pose_path": long, "text": "你是老师吗？你去做什么？"}]
    dataset = datasets.PoseDataset("CSL_Daily", "test", samples)
    batch = datasets.PoseCollator(tokenizer, "CSL_Daily")([dataset[0], dataset[1]])
    assert batch["name"] == ["short", "long"] and batch["num_skipped"] == 0
    for part, indices in datasets.PART_INDICES.items():
        assert batch["pose"][part].shape == (2, 5, len(indices), 3)
        assert torch.equal(batch["pose"][part][0, 3], batch["pose"][part][0, 2])
        assert torch.equal(batch["pose"][part][0, 4], dataset[0]["pose"][part][2])
        assert torch.equal(batch["pose"][part][1], dataset[1]["pose"][part])
    assert batch["pose_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["pose_mask"].dtype == torch.long
    labels = batch["labels"]
    target_mask = labels != -100  # the collator marks the targets' padding with -100 (the loss's ignore_index)
    assert labels.dtype == torch.long and "labels_mask" not in batch  # no second copy of what -100 says
    assert (labels[target_mask] >= 0).all() and target_mask[1].all()  # the longer target: no padding
    assert target_mask[0].sum() < target_mask[1].sum()
    assert target_mask[0].tolist() == sorted(target_mask[0].tolist(), reverse=True)  # padding only at the end
    for row, mask in zip(labels, target_mask):
        assert row[mask][-1].item() == tokenizer.eos_token_id
    assert tokenizer.decode(labels[1][target_mask[1]], skip_special_tokens=True) == "你是老师吗？你去做什么？"
    assert batch["text"] == ["你好！", "你是老师吗？你去做什么？"]


def test_targets_truncated_to_max_target_len(tmp_path, tiny_mt5_path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny_mt5_path)
    path = write_pose(tmp_path / "a.pkl", *signer_frames(2))
    item = datasets.PoseDataset("CSL_Daily", "dev", [{"name": "a", "pose_path": path, "text": "你好" * 40}])[0]
    batch = datasets.PoseCollator(tokenizer, "CSL_Daily", max_target_len=10)([item])
    assert batch["labels"].shape[1] == 10 and batch["labels"][0, -1].item() == tokenizer.eos_token_id


@pytest.mark.parametrize("dataset_name, language", [("CSL_Daily", "Chinese"), ("CSL_News", "Chinese"),
                                                    ("Demo", "Chinese"), ("How2Sign", "English"),
                                                    ("OpenASL", "English"), ("WLASL", "English")])
def test_prompt_in_dataset_language(tmp_path, tiny_mt5_path, dataset_name, language):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny_mt5_path)
    assert datasets.prompt_for(dataset_name) == f"Translate sign language video to {language}: "
    path = write_pose(tmp_path / "a.pkl", *signer_frames(2))
    items = datasets.PoseDataset(dataset_name, "dev", [{"name": "a", "pose_path": path, "text": "x"}] * 2)
    batch = datasets.PoseCollator(tokenizer, dataset_name)([items[0], items[1]])
    assert batch["prompt_ids"].shape[0] == 2 and batch["prompt_mask"].all()
    assert batch["prompt_ids"][0, -1].item() == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in batch["prompt_ids"][0].tolist()
    assert tokenizer.decode(batch["prompt_ids"][0], skip_special_tokens=True) == datasets.prompt_for(dataset_name).strip()


# ----------------------------------------------------------------------------- label formats
def test_real_label_files_load_with_the_restricted_unpickler(tmp_path):
    pose_dir = tmp_path / "poses"
    os.makedirs(pose_dir / "dev")
    daily = datasets.build_dataset("CSL_Daily", "dev", args(), pose_dir=str(pose_dir))
    assert len(daily) == 1077
    first = daily.samples[0]
    assert first["pose_path"] == os.path.join(str(pose_dir), first["name"] + ".pkl") and first["text"]
    cslr = datasets.build_dataset("CSL_Daily", "dev", args(task="CSLR"), pose_dir=str(pose_dir))
    with gzip.open(os.path.join(ROOT, "data", "CSL_Daily", "labels.dev"), "rb") as f:
        labels = safe_pickle.safe_pickle_load(f)
    assert cslr.samples[0]["text"] == " ".join(labels[first["name"]]["gloss"])
    wlasl = datasets.build_dataset("WLASL", "dev", args(task="ISLR"), pose_dir=str(pose_dir))
    assert wlasl.samples[0]["pose_path"].startswith(os.path.join(str(pose_dir), "dev") + os.sep)
    assert wlasl.samples[0]["text"] and " " not in wlasl.samples[0]["text"].strip()
    how2sign = datasets.build_dataset("How2Sign", "test", args(), pose_dir=str(pose_dir))
    assert len(how2sign) > 2000


def test_cslr_targets_join_glosses_and_need_gloss_labels(tmp_path):
    label_path = tmp_path / "labels.dev"
    with gzip.open(label_path, "wb") as f:
        pickle.dump({"a": {"name": "a", "gloss": ["我", "想", "喝"], "text": "我想喝水。", "video_path": "a.mp4"}}, f)
    dataset = datasets.build_dataset("CSL_Daily", "dev", args(task="CSLR"), label_path=str(label_path),
                                     pose_dir=str(tmp_path))
    assert dataset.samples[0]["text"] == "我 想 喝"
    assert datasets.build_dataset("CSL_Daily", "dev", args(), label_path=str(label_path),
                                  pose_dir=str(tmp_path)).samples[0]["text"] == "我想喝水。"
    with gzip.open(label_path, "wb") as f:
        pickle.dump({"b": {"name": "b", "gloss": "", "text": "hello", "video_path": "b.mp4"}}, f)
    with pytest.raises(ValueError, match="gloss"):
        datasets.build_dataset("How2Sign", "dev", args(task="CSLR"), label_path=str(label_path), pose_dir=str(tmp_path))


def test_csl_news_json_split_99_1(tmp_path):
    entries = [{"video": f"v{i}.mp4", "pose": f"v{i}.pkl", "text": f"句子{i}"} for i in range(300)]
    label_path = tmp_path / "CSL_News_Labels.json"
    label_path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    build = lambda phase: datasets.build_dataset("CSL_News", phase, args(), label_path=str(label_path),  # noqa: E731
                                                 pose_dir=str(tmp_path))
    train, dev, test = build("train"), build("dev"), build("test")
    assert len(train) == 297 and len(dev) == 3 and list(dev.samples) == list(test.samples)
    assert [s["name"] for s in dev.samples] == ["v297", "v298", "v299"]
    assert train.samples.texts.data is dev.samples.texts.data  # one parse per process, two views
    assert [s["text"] for s in list(train.samples) + list(dev.samples)] == [e["text"] for e in entries]
    assert train.samples[0] == {"name": "v0", "pose_path": str(tmp_path / "v0.pkl"), "text": "句子0"}


def test_missing_label_file_tells_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        datasets.build_dataset("CSL_News", "train", args())
    message = str(error.value)
    assert "config.py" in message and "Using real data" in message and "CSL_News_Labels.json" in message
    assert "ZechengLi19/CSL-News" in message  # where it comes from
    with pytest.raises(FileNotFoundError, match="make_demo"):
        datasets.build_dataset("Demo", "train", args(), label_path=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="phase"):
        datasets.build_dataset("CSL_Daily", "val", args())


def test_malformed_label_entry_names_file(tmp_path):
    label_path = tmp_path / "labels.train"
    with gzip.open(label_path, "wb") as f:
        pickle.dump({"a": {"name": "a", "text": "x"}}, f)
    with pytest.raises(ValueError, match="labels.train.*'a'"):
        datasets.build_dataset("CSL_Daily", "train", args(), label_path=str(label_path), pose_dir=str(tmp_path))


def test_benchmark_script_prints_ratio_json(capsys):
    from bench import data as bench_data
    bench_data.main(["--frames", "50", "--repeats", "3", "--no_loader"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["ratio"] > 0 and result["bare_ms"] > 0


def test_benchmark_data_compares_loader_and_model_speed(demo_root, capsys):
    from bench import data as bench_data
    bench_data.main(["--frames", "50", "--repeats", "3", "--demo_root", demo_root["out_root"], "--workers", "0", "2",
                     "--batches", "3", "--train_steps", "1", "--batch_size", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["train_steps_per_s"] > 0 and set(result["loader_batches_per_s"]) == {"0", "2"}
    assert all(speed > 0 for speed in result["loader_batches_per_s"].values())
    assert any("--num_workers 2" in line and "the model's steps/s" in line for line in out)

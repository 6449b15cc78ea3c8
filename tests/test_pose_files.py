"""`.pose` files (pose-format's) through our reader: every layout onto the model's four parts, on real signing
(tests/data/real_poses: recorded people, MIT licence, see its README) and on files built from them; bad files."""
import os
import pickle

import numpy as np
import numpy.ma as ma
import pytest
from pose_format import Pose
from pose_format.numpy.pose_body import NumPyPoseBody
from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions

import datasets
import pose_files
from data_config import DataConfig
import pose_layouts

REAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "real_poses")
LEXICON = ["kleine", "kinder", "essen", "pizza"]
NOSE_TIP = pose_layouts.FACE_START + 30
# MediaPipe's 33 pose landmarks (mediapipe.solutions.holistic.PoseLandmark's names, in order).
MEDIAPIPE_POSE = ["NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE",
                  "RIGHT_EYE_OUTER", "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER",
                  "RIGHT_SHOULDER", "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY",
                  "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX", "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP",
                  "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE", "LEFT_HEEL", "RIGHT_HEEL",
                  "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX"]
MODEL_POINTS = np.concatenate([datasets.PART_INDICES[part] for part in datasets.PART_INDICES])


def real(name):
    return os.path.join(REAL, name + ".pose")


def read_real(name):
    with open(real(name), "rb") as f:
        return Pose.read(f.read())


def write(pose, path):
    with open(path, "wb") as f:
        pose.write(f)
    return str(path)


def build_pose(components, data, confidence, size=(640, 480), fps=25.0):
    """A Pose of [(name, points, format)] components and (T, P, N, D) data."""
    header = PoseHeader(0.2, PoseHeaderDimensions(width=size[0], height=size[1], depth=0),
                        [PoseHeaderComponent(name, points, [], [], fmt) for name, points, fmt in components])
    return Pose(header, NumPyPoseBody(fps, ma.masked_array(np.asarray(data, np.float32)),
                                      np.asarray(confidence, np.float32)))


def assert_normalised(parts):
    assert set(parts) == set(datasets.PART_INDICES)
    for values in parts.values():
        assert values.dtype == np.float32 and np.isfinite(values).all()
        assert np.abs(values[..., :2]).max() <= 1.0 and ((values[..., 2] >= 0) & (values[..., 2] <= 1)).all()


@pytest.mark.parametrize("name, layout, missing", [
    ("mediapipe", "mediapipe_holistic_reduced", {0, 3, 4, NOSE_TIP}),  # nose, ears, nose tip: not kept by it
    ("openpose", "openpose_137", set()),
    *[(sign, "mediapipe_holistic_reduced", {0, 3, 4, NOSE_TIP}) for sign in LEXICON]])
def test_real_files_load_to_the_four_parts(name, layout, missing):
    record = pose_files.read_pose_file(real(name))
    assert record.layout == layout and set(record.missing) == missing
    assert len(record.keypoints) == read_real(name).body.data.shape[0]
    keypoints, scores = datasets.load_pose(real(name))
    found = scores[:, MODEL_POINTS] > datasets.CONFIDENCE_THRESHOLD
    assert not found[:, np.isin(MODEL_POINTS, list(missing))].any()  # missing points: confidence 0
    mapped = ~np.isin(MODEL_POINTS, list(missing))
    assert found[:, mapped].mean() > 0.5  # real signing: most mapped points are found in most frames
    parts = datasets.normalise_pose(keypoints, scores)
    assert_normalised(parts)
    shoulders = parts["body"][:, 3:5, 2] > 0
    assert shoulders.all()  # the body box exists in every frame: the sample is not zeroed
    face = parts["face_all"][..., :2][parts["face_all"][..., 2] > 0]
    assert np.abs(face).max() < 0.5  # recentred on the nose tip (a stand-in where the layout lacks it)


def test_coordinates_are_the_files_divided_by_the_frame_size():
    pose = read_real("openpose")
    record = pose_files.read_pose_file(real("openpose"))
    left_wrist = pose.header.components[0].points.index("LWrist")
    frame = int(np.argmax(pose.body.confidence[:, 0, left_wrist]))
    expected = np.asarray(pose.body.data[frame, 0, left_wrist, :2]) / [1000, 1000]
    assert record.keypoints[frame, 9] == pytest.approx(expected, rel=1e-6)
    assert record.scores[frame, 9] == pytest.approx(pose.body.confidence[frame, 0, left_wrist])


def full_holistic_from_reduced(reduced, face_points=468, world=False):
    """A full MediaPipe Holistic file holding the reduced file's points at their names (and a nose tip, nose and
    ears from nearby points): the mapping must find the same points by name in both."""
    frames = reduced.body.data.shape[0]
    data, conf = np.asarray(reduced.body.data), np.asarray(reduced.body.confidence)
    offsets = np.cumsum([0] + [len(c.points) for c in reduced.header.components])
    comps = {c.name: (c.points, offsets[i]) for i, c in enumerate(reduced.header.components)}
    layout = [("POSE_LANDMARKS", MEDIAPIPE_POSE), ("FACE_LANDMARKS", [str(i) for i in range(face_points)]),
              ("LEFT_HAND_LANDMARKS", comps["LEFT_HAND_LANDMARKS"][0]),
              ("RIGHT_HAND_LANDMARKS", comps["RIGHT_HAND_LANDMARKS"][0])]
    if world:
        layout.append(("POSE_WORLD_LANDMARKS", MEDIAPIPE_POSE))
    total = sum(len(points) for _, points in layout)
    out_data, out_conf = np.zeros((frames, 1, total, 3), np.float32), np.zeros((frames, 1, total), np.float32)
    start = 0
    for name, points in layout:
        source_points, source_start = comps.get(name, ([], 0))
        for i, point in enumerate(points):
            if point in source_points:
                j = source_start + source_points.index(point)
                out_data[:, :, start + i], out_conf[:, :, start + i] = data[:, :, j], conf[:, :, j]
        start += len(points)
    face_start = len(MEDIAPIPE_POSE)
    eyes = out_data[:, :, [face_start + 133, face_start + 362]].mean(axis=2)
    out_data[:, :, face_start + 4] = eyes  # the nose tip between the eyes: present in the full mesh
    out_conf[:, :, face_start + 4] = 1
    for point in ("NOSE", "LEFT_EAR", "RIGHT_EAR"):
        out_data[:, :, MEDIAPIPE_POSE.index(point)], out_conf[:, :, MEDIAPIPE_POSE.index(point)] = eyes, 0.9
    return build_pose([(name, points, "XYZC") for name, points in layout], out_data, out_conf,
                      size=(reduced.header.dimensions.width, reduced.header.dimensions.height))


@pytest.mark.parametrize("face_points, world, total", [(468, False, 543), (478, False, 553), (468, True, 576),
                                                       (478, True, 586)])
def test_full_holistic_maps_the_same_points_by_name(tmp_path, face_points, world, total):
    reduced = read_real("essen")
    full = full_holistic_from_reduced(reduced, face_points, world)
    assert full.body.data.shape[2] == total
    record = pose_files.read_pose_file(write(full, tmp_path / "full.pose"))
    assert record.layout == "mediapipe_holistic" and record.missing == ()
    expected = pose_files.read_pose_file(real("essen"))
    shared = [i for i in MODEL_POINTS if i not in (0, 3, 4, NOSE_TIP)]
    np.testing.assert_allclose(record.keypoints[:, shared], expected.keypoints[:, shared], rtol=1e-6)
    np.testing.assert_array_equal(record.scores[:, shared], expected.scores[:, shared])
    assert (record.scores[:, [0, 3, 4, NOSE_TIP]] > 0.3).all()
    assert_normalised(datasets.normalise_pose(record.keypoints, record.scores))


def test_coco_wholebody_pose_file_round_trips_a_pickle(tmp_path):
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0.1, 0.9, (20, 1, 133, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, (20, 1, 133)).astype(np.float32)
    pose = {"keypoints": keypoints, "scores": scores, "w_h": (210, 260), "fps": 25.0}
    pose_files.write_pose_file(pose, str(tmp_path / "clip.pose"))
    opened = Pose.read((tmp_path / "clip.pose").read_bytes())  # pose-format's own reader opens it
    assert opened.body.data.shape == (20, 1, 133, 2) and opened.body.fps == 25
    assert [c.name for c in opened.header.components] == ["BODY", "FACE", "LEFT_HAND", "RIGHT_HAND"]
    record = pose_files.read_pose_file(str(tmp_path / "clip.pose"))
    assert record.layout == "coco_wholebody_133" and record.size == (210, 260)
    np.testing.assert_allclose(record.keypoints, keypoints[:, 0], rtol=1e-6)  # all 133 points, as they were
    np.testing.assert_array_equal(record.scores, scores[:, 0])


def test_a_pose_folder_may_hold_pose_files_and_pickles(tmp_path):
    import gzip
    pose = read_real("pizza")
    write(pose, tmp_path / "clip.pose")
    record = pose_files.read_pose_file(real("kinder"))
    with open(tmp_path / "other.pkl", "wb") as f:
        pickle.dump({"keypoints": record.keypoints[:, None], "scores": record.scores[:, None]}, f)
    labels = {name: {"name": name, "video_path": name + ".mp4", "text": "x"} for name in ("clip", "other", "gone")}
    with gzip.open(tmp_path / "labels.dev", "wb") as f:
        pickle.dump(labels, f)
    dataset = datasets.build_dataset("Demo", "dev", DataConfig(), label_path=str(tmp_path / "labels.dev"),
                                     pose_dir=str(tmp_path))
    paths = [dataset.samples[i]["pose_path"] for i in range(3)]
    assert paths == [str(tmp_path / "clip.pose"), str(tmp_path / "other.pkl"), str(tmp_path / "gone.pkl")]
    assert len(dataset[0]["pose"]["body"]) == pose.body.data.shape[0]


def test_layout_warning_names_both_layouts(tmp_path):
    samples = [{"name": "a", "pose_path": real("openpose"), "text": "x"}]
    warning = datasets.pose_layout_warning(datasets.PoseDataset("Demo", "test", samples))
    assert warning.startswith(f"warning: {real('openpose')} holds openpose_137 keypoints") and "coco_wholebody_133" in warning
    record = pose_files.read_pose_file(real("openpose"))
    pose_files.write_pose_file({"keypoints": record.keypoints[:, None], "scores": record.scores[:, None],
                                "w_h": (1000, 1000), "fps": 24}, str(tmp_path / "coco.pose"))
    samples = [{"name": "b", "pose_path": str(tmp_path / "coco.pose"), "text": "x"}]
    assert datasets.pose_layout_warning(datasets.PoseDataset("Demo", "test", samples)) is None


def test_several_people_the_first_or_the_named_one(tmp_path):
    reduced = read_real("kinder")
    data = np.concatenate([np.asarray(reduced.body.data), np.asarray(reduced.body.data) + 50], axis=1)
    conf = np.concatenate([np.asarray(reduced.body.confidence)] * 2, axis=1)
    components = [(c.name, c.points, c.format) for c in reduced.header.components]
    path = write(build_pose(components, data, conf), tmp_path / "two.pose")
    first, second = pose_files.read_pose_file(path, count_people=True), pose_files.read_pose_file(path, person=1)
    assert (first.people == 2).all()
    found = first.scores[0] > 0
    np.testing.assert_allclose(second.keypoints[0, found] - first.keypoints[0, found],
                               np.broadcast_to([50 / 640, 50 / 480], (found.sum(), 2)), rtol=1e-4)
    with pytest.raises(pose_files.PoseFileError, match="person 2 asked for, but it stores 2"):
        pose_files.read_pose_file(path, person=2)


def bad_files(tmp_path):
    """name -> (path, the message's distinctive part)."""
    good = (tmp_path / "good.pose")
    write(read_real("kinder"), good)
    raw = good.read_bytes()
    files = {"truncated": (raw[:len(raw) * 2 // 3], "truncated"), "cut header": (raw[:500], "not a readable .pose"),
             "a pickle": (pickle.dumps({"keypoints": []}), "not a readable .pose"), "empty": (b"", "empty")}
    paths = {}
    for name, (content, message) in files.items():
        path = tmp_path / (name.replace(" ", "_") + ".pose")
        path.write_bytes(content)
        paths[name] = (str(path), message)
    points = [("HEAD", ["a", "b"], "XYC")]
    paths["unknown layout"] = (write(build_pose(points, np.ones((3, 1, 2, 2)), np.ones((3, 1, 2))),
                                     tmp_path / "unknown.pose"), "unknown pose layout with components HEAD")
    reduced = read_real("kinder")
    components = [(c.name, c.points, c.format) for c in reduced.header.components]
    shape = reduced.body.data.shape
    paths["zero frames"] = (write(build_pose(components, np.zeros((0,) + shape[1:]), np.zeros((0,) + shape[1:3])),
                                  tmp_path / "no_frames.pose"), "no frames")
    paths["zero people"] = (write(build_pose(components, np.zeros((4, 0) + shape[2:]), np.zeros((4, 0, shape[2]))),
                                  tmp_path / "nobody.pose"), "no person")
    nan = np.asarray(reduced.body.data).copy()
    nan[2, 0, 0] = np.nan  # the left shoulder, a point the model reads (NaN elsewhere is not read)
    paths["NaN"] = (write(build_pose(components, nan, reduced.body.confidence), tmp_path / "nan.pose"),
                    r"NaN or inf values in frame\(s\) \[2\]")
    return paths


def test_bad_pose_files_raise_one_error_naming_the_file(tmp_path):
    for name, (path, message) in bad_files(tmp_path).items():
        with pytest.raises(datasets.BadSampleError, match=message) as error:
            datasets.load_pose(path)
        assert str(error.value).startswith(path) and "\n" not in str(error.value), name


def test_bad_pose_files_are_skipped_by_name(tmp_path):
    paths = bad_files(tmp_path)
    samples = [{"name": name, "pose_path": path, "text": "x"} for name, (path, _) in paths.items()]
    samples.append({"name": "good", "pose_path": str(tmp_path / "good.pose"), "text": "x"})
    dataset = datasets.PoseDataset("Demo", "dev", samples, skip_bad_samples=True)
    assert [dataset[i] is None for i in range(len(samples))] == [True] * len(paths) + [False]


def test_render_draws_a_real_pose_file_at_its_joint(tmp_path):
    import cv2
    import pose_render
    clip = pose_render.read_pose(real("openpose"))
    assert clip.size == (1000, 1000) and clip.fps == 24 and clip.stored == 93
    frame = int(np.argmax(clip.scores[:, 9]))
    out = str(tmp_path / "frame.png")
    pose_render.render_clip([clip], out, frame=frame)
    image = cv2.imread(out)
    x, y = (clip.keypoints[frame, 9] * 1000).round().astype(int)  # the left wrist, in the file's frame
    assert image[y - 2:y + 3, x - 2:x + 3].max() > 100  # a drawn point where the joint is
    assert image[:40, :40].max() == 0  # the corner is blank canvas


@pytest.mark.parametrize("layout", ["mediapipe_reduced", "mediapipe_full", "coco_wholebody"])
def test_render_draws_every_layout_at_its_joint(tmp_path, layout):
    """The renderer reads each layout's `.pose` (a real signer's, or the same points written as the full Holistic
    or as COCO-WholeBody) and draws the left shoulder where the file puts it (its wrist leaves the picture)."""
    SHOULDER = 5  # COCO-WholeBody's left shoulder
    import cv2
    import pose_render
    path = real("mediapipe")
    if layout == "mediapipe_full":
        path = str(tmp_path / "full.pose")
        write(full_holistic_from_reduced(read_real("mediapipe"), 468), path)
    elif layout == "coco_wholebody":
        record = pose_files.read_pose_file(real("mediapipe"))
        path = str(tmp_path / "coco.pose")
        pose_files.write_pose_file({"keypoints": record.keypoints[:, None], "scores": record.scores[:, None],
                                    "w_h": record.size, "fps": record.fps}, path)
    clip = pose_render.read_pose(path)
    inside = ((clip.keypoints[:, SHOULDER] > 0.05) & (clip.keypoints[:, SHOULDER] < 0.95)).all(axis=1)
    frame = int(np.argmax(np.where(inside, clip.scores[:, SHOULDER], -1)))
    assert inside[frame] and clip.scores[frame, SHOULDER] > 0.3  # the shoulder is seen, inside the picture, in that frame
    out = str(tmp_path / "frame.png")
    pose_render.render_clip([clip], out, frame=frame)
    image = cv2.imread(out)
    width, height = clip.size
    x, y = (clip.keypoints[frame, SHOULDER] * [width, height]).round().astype(int)
    assert image[y - 2:y + 3, x - 2:x + 3].max() > 100  # a drawn point where the joint is


def lexicon_labels(folder, other_layouts=False):
    """A label file per split whose samples are the lexicon's four real signs (German words, glosses); with
    other_layouts, also the OpenPose recording and a full-Holistic file (pose folder: `folder`/poses)."""
    import csv
    import gzip
    import shutil
    with open(os.path.join(REAL, "index.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    labels = {os.path.basename(row["path"])[:-5]: row for row in rows}
    assert sorted(labels) == sorted(LEXICON)
    poses = folder / "poses"
    poses.mkdir()
    for name in labels:
        shutil.copy(real(name), poses)
    if other_layouts:
        shutil.copy(real("openpose"), poses)
        write(full_holistic_from_reduced(read_real("essen"), 478, world=True), poses / "full.pose")
        labels["openpose"] = {"words": "hallo", "glosses": "HALLO"}
        labels["full"] = {"words": "essen", "glosses": "Essen"}
    paths = {"pose_dir": str(poses)}
    for phase in ("train", "dev", "test"):
        paths[phase] = str(folder / f"labels.{phase}")
        with gzip.open(paths[phase], "wb") as f:
            pickle.dump({name: {"name": name, "video_path": f"{name}.mp4", "text": row["words"],
                                "gloss": [row["glosses"]]} for name, row in labels.items()}, f)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("task, metric", [("ISLR", "dev_top1_per_instance"), ("SLT", "dev_bleu4")])
def test_training_on_the_real_lexicon_signs_runs_and_saves(tiny_mt5_path, tmp_path, task, metric):
    """ISLR on the four real signs; SLT on them and on an OpenPose and a full-Holistic (586 points) file."""
    import sys
    from e2e import check_ok, read_log, run
    paths = lexicon_labels(tmp_path, other_layouts=task == "SLT")  # ISLR: the four signs, four classes
    out = tmp_path / "run"
    check_ok(run([sys.executable, "fine_tuning.py", "--dataset", "Phoenix2014T", "--task", task, "--mt5_path",
                  tiny_mt5_path, "--pose_dir", paths["pose_dir"], "--train_label_path", paths["train"], "--dev_label_path",
                  paths["dev"], "--test_label_path", paths["test"], "--output_dir", str(out), "--epochs", "1",
                  "--max_length", "16", "--batch_size", "2", "--lr", "1e-3", "--warmup-epochs", "0", "--num_workers", "0",
                  "--num_beams", "1", "--max_tgt_len", "6", "--use_hyperbolic", "--hyp_text_cmp", "token",
                  "--hyp_text_emb_src", "decoder"]))
    log = read_log(out)
    assert [r["epoch"] for r in log] == [0] and np.isfinite(log[0]["train_loss"])
    assert metric in log[-1] and 0 <= log[-1][metric] <= 100
    assert os.path.isfile(out / "checkpoint.pth")
    with open(out / "dev_tmp_refs.txt", encoding="utf-8") as f:
        assert len(f.read().splitlines()) == (6 if task == "SLT" else 4)  # every sample scored, none skipped

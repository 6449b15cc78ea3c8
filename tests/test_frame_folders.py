"""Frame folders (numbered images, PHOENIX-2014T's form) as videos: read in number order, the same errors as for
video files, PHOENIX's layout extracted to the paths its labels name, as pickles or `.pose` files, and trained on."""
import gzip
import os
import pickle
import sys

import cv2
import numpy as np
import pytest

import datasets
import pose_extraction
import pose_files
import tiny_pose_models as tiny
from e2e import check_ok, read_log, run

REAL_VIDEO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "real_poses", "test_video.mp4")
PHOENIX_SIZE = (210, 260)


def write_frames(folder, frames, pattern="images{:04d}.png"):
    os.makedirs(folder, exist_ok=True)
    for t, frame in enumerate(frames):
        assert cv2.imwrite(os.path.join(folder, pattern.format(t + 1)), frame)
    return str(folder)


def person_frames(count, size=PHOENIX_SIZE):
    frames = []
    for t in range(count):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        x0, y0, x1, y1 = tiny.moving_box(t, size, (50, 100))
        frame[y0:y1, x0:x1] = 255
        frames.append(frame)
    return frames


def test_a_frame_folder_of_the_real_video_reads_as_the_video(tmp_path):
    with pose_extraction.VideoReader(REAL_VIDEO) as video:
        decoded = list(video)
    folder = write_frames(tmp_path / "signer", decoded, pattern="frame{}.png")  # unpadded: 10 sorts after 9
    assert pose_extraction.find_videos(str(tmp_path)) == [folder]
    with pose_extraction.VideoReader(folder) as frames:
        assert frames.fps == 25.0 and frames.frame_count == len(decoded) == 58
        assert frames.declared_size() == (decoded[0].shape[1], decoded[0].shape[0])
        read = list(frames)
    assert all(np.array_equal(a, b) for a, b in zip(read, decoded)) and len(read) == len(decoded)
    with pose_extraction.VideoReader(folder, fps=12.5) as frames:
        assert frames.fps == 12.5


def test_empty_corrupt_and_mixed_frame_folders_are_named_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(pose_extraction.VideoError, match="empty: a folder without frame images"):
        pose_extraction.VideoReader(str(tmp_path / "empty"))
    broken = write_frames(tmp_path / "broken", person_frames(4))
    (tmp_path / "broken" / "images0003.png").write_bytes(b"not a png")
    with pytest.raises(pose_extraction.VideoError, match=r"broken: frame images0003\.png cannot be read"):
        list(pose_extraction.VideoReader(broken))
    mixed = write_frames(tmp_path / "mixed", person_frames(3) + person_frames(1, size=(100, 100)))
    with pytest.raises(pose_extraction.VideoError, match=r"mixed: frame images0004\.png is 100x100"):
        list(pose_extraction.VideoReader(mixed))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny.make_models(str(tmp_path_factory.mktemp("pose_models")))


def phoenix_corpus(root):
    """fullFrame-210x260px/{train,dev,test}/<name>/images%04d.png, two short videos a split; returns the labels."""
    labels = {}
    for split in ("train", "dev", "test"):
        labels[split] = {}
        for i, text in enumerate(["und nun das wetter", "morgen regen im norden"]):
            name = f"{split}/{i:02d}April_2010_Thursday_heute-{i}"
            frames = 10 + 2 * i
            write_frames(root / name, person_frames(frames))
            labels[split][name] = {"name": name, "gloss": "JETZT WETTER" if i == 0 else "MORGEN REGEN NORD",
                                   "text": text, "length": frames,
                                   "imgs_path": [f"{name}/images{t + 1:04d}.png" for t in range(frames)]}
    return labels


@pytest.mark.slow
def test_phoenix_frame_folders_extract_round_trip_and_train(models, tiny_mt5_path, tmp_path):
    src = tmp_path / "PHOENIX-2014-T" / "features" / "fullFrame-210x260px"
    labels = phoenix_corpus(src)
    flags = ["--det_model", models[0], "--pose_model", models[1], "--layout", "phoenix"]
    outs = {fmt: tmp_path / f"poses_{fmt}" for fmt in ("pkl", "pose")}
    for fmt, out in outs.items():
        check_ok(run([sys.executable, "script/extract_poses.py", "--src", str(src), "--out", str(out), "--format",
                      fmt, *flags]))
    for split, entries in labels.items():
        for name, label in entries.items():
            pickled = datasets.load_pose(str(outs["pkl"] / f"{name}.pkl"))
            record = pose_files.read_pose_file(str(outs["pose"] / f"{name}.pose"))
            assert len(record.keypoints) == label["length"] and record.size == PHOENIX_SIZE and record.fps == 25
            np.testing.assert_allclose(record.keypoints, pickled[0], rtol=1e-6, atol=1e-7)  # pixels and back
            np.testing.assert_array_equal(record.scores, pickled[1])
            assert (record.scores[:, :17] > 0.9).all()  # the stand-in finds the person in every frame
    wrong = run([sys.executable, "script/extract_poses.py", "--src", str(src / "train"), "--out", str(tmp_path / "x"),
                 *flags])
    assert wrong.returncode != 0 and "--layout phoenix: no train/dev/test folder in it" in wrong.stderr
    label_paths = {}
    for split, entries in labels.items():
        label_paths[split] = str(tmp_path / f"labels.{split}")
        with gzip.open(label_paths[split], "wb") as f:
            pickle.dump(entries, f)
    out = tmp_path / "run"
    result = check_ok(run([sys.executable, "fine_tuning.py", "--dataset", "Phoenix2014T", "--task", "SLT",
                           "--mt5_path", tiny_mt5_path, "--pose_dir", str(outs["pose"]),
                           "--train_label_path", label_paths["train"], "--dev_label_path", label_paths["dev"],
                           "--test_label_path", label_paths["test"], "--output_dir", str(out), "--epochs", "1",
                           "--batch_size", "2", "--lr", "1e-3", "--warmup-epochs", "0", "--num_workers", "0",
                           "--num_beams", "1", "--max_tgt_len", "8"]))
    assert "error" not in result.stderr.lower()
    log = read_log(out)
    assert log and "dev_bleu4" in log[0] and np.isfinite(log[0]["train_loss"])
    assert os.path.isfile(out / "checkpoint.pth")


@pytest.mark.slow
def test_translate_video_on_real_signing(models, demo_root, tmp_path):
    """The demo model translates a real `.pose` (with the layout warning), the real webcam video and a frame
    folder of it (stand-in pose models), without error."""
    import torch
    from models import Uni_Sign
    from test_video import demo_args
    torch.manual_seed(0)
    checkpoint = tmp_path / "fresh.pth"
    torch.save({"model": Uni_Sign(demo_args(demo_root)).state_dict(), "args": vars(demo_args(demo_root))}, checkpoint)
    with pose_extraction.VideoReader(REAL_VIDEO) as video:
        folder = write_frames(tmp_path / "frames", list(video)[:20])
    real_pose = os.path.join(os.path.dirname(REAL_VIDEO), "mediapipe.pose")
    record = pose_files.read_pose_file(real_pose)  # the same signer as a COCO-WholeBody (RTMW-layout) .pose
    coco_pose = str(tmp_path / "coco.pose")
    pose_files.write_pose_file({"keypoints": record.keypoints[:, None], "scores": record.scores[:, None],
                                "w_h": record.size, "fps": record.fps}, coco_pose)
    from test_pose_files import full_holistic_from_reduced, read_real, write
    openpose = os.path.join(os.path.dirname(REAL_VIDEO), "openpose.pose")
    full = str(tmp_path / "full.pose")  # a real signer as a full MediaPipe Holistic file (586 points)
    write(full_holistic_from_reduced(read_real("essen"), 478, world=True), full)
    result = check_ok(run([sys.executable, "script/translate_video.py", real_pose, coco_pose, openpose, full,
                           REAL_VIDEO, folder, "--finetune",
                           str(checkpoint), "--json", "--det_model", models[0], "--pose_model", models[1],
                           "--render", str(tmp_path / "rendered")]))
    import json
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["video"] for line in lines] == [real_pose, coco_pose, openpose, full, REAL_VIDEO, folder]
    assert [line["frames"] for line in lines] == [170, 170, 93, len(read_real("essen").body.data), 58, 20]
    assert all(isinstance(line["translation"], str) for line in lines)
    assert (f"warning: {real_pose} holds mediapipe_holistic_reduced keypoints, but the model was trained on "
            "coco_wholebody_133") in result.stderr
    assert coco_pose not in result.stderr  # the layout the model was trained on: no warning
    assert {p.name for p in (tmp_path / "rendered").iterdir()} >= {"mediapipe.mp4", "coco.mp4", "openpose.mp4",
                                                                   "full.mp4", "test_video.mp4", "frames.mp4"}

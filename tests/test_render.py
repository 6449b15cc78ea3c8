"""Skeleton renderings (pose_render.py, script/render_poses.py): where each part's points land, side by side,
the confidence threshold, one-line errors that write nothing, memory that does not grow with a file's length."""
import json
import os
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

import e2e
import pose_extraction
import pose_render
import render_poses

SIZE = (320, 240)
# One point per part, each a point the model reads (datasets.PART_INDICES): nose, left and right wrists
# (hand point 0), nose tip (face 53). Its place moves with the frame index t, so that frames can be told apart.
KNOWN_POINTS = {"body": 0, "left": 91, "right": 112, "face": 53}


def known_place(part, t):
    """Normalised (x, y) of part's known point in stored frame t."""
    return {"body": (0.20 + 0.02 * t, 0.30), "left": (0.70, 0.45 + 0.02 * t), "right": (0.35, 0.75),
            "face": (0.55, 0.12 + 0.01 * t)}[part]


def known_pose(frames, score=0.9):
    """keypoints (T, 1, 133, 2) and scores (T, 1, 133): only the known points confident (others score 0)."""
    keypoints = np.full((frames, 1, 133, 2), 0.5, np.float32)
    scores = np.zeros((frames, 1, 133), np.float32)
    for part, index in KNOWN_POINTS.items():
        for t in range(frames):
            keypoints[t, 0, index] = known_place(part, t)
        scores[:, 0, index] = score
    return keypoints, scores


def write_known(path, frames=6, **fields):
    keypoints, scores = known_pose(frames)
    pose_extraction.write_pose({"keypoints": keypoints, "scores": scores, **fields}, str(path))
    return str(path)


def centroid(image, colour):
    """(x, y) mean of the pixels of exactly `colour` (BGR), or None when there are none."""
    ys, xs = np.nonzero((image == np.array(colour, np.uint8)).all(axis=-1))
    return (xs.mean(), ys.mean()) if len(xs) else None


def assert_parts_at(image, t, offset=0, size=SIZE):
    """Every part's colour is drawn, centred within 1 px of its known point of frame t (panel at x offset)."""
    for part, colour in pose_render.PART_COLOURS.items():
        found = centroid(image[:, offset:offset + size[0]], colour)
        expected = np.multiply(known_place(part, t), size)
        assert found is not None, part
        assert np.abs(np.subtract(found, expected)).max() <= 1.0, (part, found, expected)


def noise_video(path, frames, size=SIZE):
    """An mp4 of dark noise (values under 60: no part colour, each of which has a channel over 200)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return str(path)


def read_video(path):
    """(fps, every frame) of a video, read by pose_extraction's reader."""
    with pose_extraction.VideoReader(str(path)) as video:
        return video.fps, list(video)


def render(*argv):
    return render_poses.main(render_poses.get_args_parser().parse_args([str(a) for a in argv]))


def test_each_part_is_drawn_where_its_point_is_on_a_blank_canvas():
    keypoints, scores = known_pose(3)
    for parts in (False, True):
        image = pose_render.render_frame(keypoints[2, 0], scores[2, 0], size=SIZE, parts=parts)
        assert image.shape == (SIZE[1], SIZE[0], 3)
        assert_parts_at(image, 2)


def test_each_part_is_drawn_where_its_point_is_over_the_video(tmp_path):
    """Through the command: the pickle's w_h places the points on the video's frame, frame 4 of the output is
    the video's frame 4 with the pickle's frame 4, and the noise under it is kept."""
    pose = write_known(tmp_path / "clip.pkl", frames=6, w_h=SIZE, fps=25.0)
    video = noise_video(tmp_path / "clip.mp4", 6)
    render(pose, "--video", video, "--out", tmp_path / "frame.png", "--frame", 4)
    image = cv2.imread(str(tmp_path / "frame.png"))
    assert image.shape == (SIZE[1], SIZE[0], 3)
    assert_parts_at(image, 4)
    assert np.median(image) > 5  # the video's noise is there, not a black canvas


def test_side_by_side_doubles_the_width_with_each_skeleton_in_its_half(tmp_path):
    """Frames align on the source frame index: the first file covers stored frames [2, 5) (start/end), the
    second [0, 6). GIF: exact colours (the part colours are in its palette)."""
    first = write_known(tmp_path / "released.pkl", frames=6, start=2, end=5, w_h=SIZE)
    keypoints, scores = known_pose(6)
    keypoints[..., 0] = 1 - keypoints[..., 0]  # the second file's points mirrored: its own places
    pose_extraction.write_pose({"keypoints": keypoints, "scores": scores}, str(tmp_path / "mine.pkl"))
    render(first, tmp_path / "mine.pkl", "--out", tmp_path / "both.gif")
    gif = Image.open(tmp_path / "both.gif")
    assert gif.size == (2 * SIZE[0], SIZE[1]) and gif.n_frames == 6
    for t in (0, 3):
        gif.seek(t)
        image = np.asarray(gif.convert("RGB"))[..., ::-1]
        right = image[:, SIZE[0]:]
        for part, colour in pose_render.PART_COLOURS.items():
            expected = np.multiply(known_place(part, t), SIZE)
            found = centroid(right, colour)
            assert np.abs(np.subtract(found, (SIZE[0] - expected[0], expected[1]))).max() <= 1.0, (t, part)
        if t == 0:  # before the first file's start: its half has no skeleton
            assert all(centroid(image[:, :SIZE[0]], c) is None for c in pose_render.PART_COLOURS.values())
        else:
            assert_parts_at(image, t)


def test_an_mp4_has_every_frame_at_the_pickles_fps(tmp_path):
    pose = write_known(tmp_path / "clip.pkl", frames=7, w_h=SIZE, fps=12.5)
    render(pose, "--out", tmp_path / "clip.mp4")
    fps, frames = read_video(tmp_path / "clip.mp4")
    assert len(frames) == 7 and fps == pytest.approx(12.5)
    assert frames[0].shape == (SIZE[1], SIZE[0], 3)
    colour = np.array(pose_render.PART_COLOURS["body"], float)
    x, y = np.rint(np.multiply(known_place("body", 6), SIZE)).astype(int)
    assert np.abs(frames[6][y, x] - colour).max() < 60  # lossy, but the body's colour at its place


def test_the_threshold_hides_low_confidence_points():
    """A score at the model's threshold (0.3) is not confident (the model's test is score > 0.3): not drawn;
    --faded draws it dim; just over it, drawn in full."""
    keypoints, scores = known_pose(1)
    body = KNOWN_POINTS["body"]
    colour = pose_render.PART_COLOURS["body"]
    dim = tuple(round(pose_render.FADE * c) for c in colour)
    scores[0, 0, body] = 0.3
    hidden = pose_render.render_frame(keypoints[0, 0], scores[0, 0], size=SIZE)
    faded = pose_render.render_frame(keypoints[0, 0], scores[0, 0], size=SIZE, faded=True)
    x, y = np.rint(np.multiply(known_place("body", 0), SIZE)).astype(int)
    assert centroid(hidden, colour) is None and (hidden[y - 1:y + 2, x - 1:x + 2] == 0).all()
    assert centroid(faded, colour) is None and tuple(faded[y, x]) == dim  # faded: every low point, dim
    assert centroid(hidden, pose_render.PART_COLOURS["left"]) is not None  # the others still drawn
    scores[0, 0, body] = 0.31
    assert centroid(pose_render.render_frame(keypoints[0, 0], scores[0, 0], size=SIZE), colour) is not None


def test_parts_greys_the_points_the_model_does_not_read():
    keypoints, scores = known_pose(1)
    scores[0, 0, 1] = 0.9  # the left eye: a body point the model does not read
    keypoints[0, 0, 1] = (0.9, 0.9)
    plain = pose_render.render_frame(keypoints[0, 0], scores[0, 0], size=SIZE)
    parts = pose_render.render_frame(keypoints[0, 0], scores[0, 0], size=SIZE, parts=True)
    corner = (slice(int(0.85 * SIZE[1]), None), slice(int(0.85 * SIZE[0]), None))
    assert centroid(plain[corner], pose_render.PART_COLOURS["body"]) is not None
    assert centroid(parts[corner], pose_render.PART_COLOURS["body"]) is None
    assert centroid(parts[corner], pose_render.UNREAD_COLOUR) is not None


def bad_pose_files(folder):
    """name -> (path, what the error line must say) of pose files that are not usable ones."""
    keypoints, scores = known_pose(4)
    cases = {"wrong_keys": ({"points": keypoints, "scores": scores}, "expected a dict with 'keypoints'"),
             "wrong_shape": ({"keypoints": keypoints[:, :, :100], "scores": scores}, "shape"),
             "no_frames": ({"keypoints": [], "scores": []}, "no frames"),
             "bad_w_h": ({"keypoints": keypoints, "scores": scores, "w_h": "640x480"}, "w_h")}
    paths = {}
    for name, (pose, message) in cases.items():
        pose_extraction.write_pose(pose, str(folder / f"{name}.pkl"))
        paths[name] = (str(folder / f"{name}.pkl"), message)
    (folder / "garbage.pkl").write_bytes(os.urandom(300))
    paths["garbage"] = (str(folder / "garbage.pkl"), "garbage.pkl")
    return paths


def test_errors_are_one_line_naming_the_file_and_write_nothing(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = write_known(inputs / "good.pkl", frames=6, w_h=SIZE)
    cases = [([path], message, path) for path, message in bad_pose_files(inputs).values()]
    short = noise_video(inputs / "short.mp4", 4)
    other_size = noise_video(inputs / "wide.mp4", 6, size=(400, 240))
    cases += [([good, "--video", short], "4 frames, but", short), ([good, "--video", other_size], "400x240", other_size),
              ([good, "--video", str(inputs / "missing.mp4")], "not found", "missing.mp4")]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for out in ("clip.mp4", "clip.gif", "clip.png"):
        for argv, message, named in cases:
            with pytest.raises(SystemExit) as stop:
                render(*argv, "--out", out_dir / out)
            error = capsys.readouterr().err
            assert stop.value.code == 1 and error.count("\n") == 1 and error.startswith("error: "), error
            assert message in error and os.path.basename(named) in error, error
            assert os.listdir(out_dir) == []
    with pytest.raises(SystemExit):
        render(good, "--out", out_dir / "clip.avi")
    assert capsys.readouterr().err.startswith("error: --out ") and os.listdir(out_dir) == []


def test_a_subtitle_is_drawn_under_the_frame(tmp_path):
    pose = write_known(tmp_path / "clip.pkl", frames=2, w_h=SIZE)
    clip = pose_render.read_pose(pose)
    pose_render.render_clip([clip], str(tmp_path / "sub.png"), subtitle="hello there", progress=False)
    image = cv2.imread(str(tmp_path / "sub.png"))
    white = (image == 255).all(axis=-1)
    rows = np.nonzero(white.any(axis=1))[0]
    assert len(rows) and rows.min() > SIZE[1] * 0.75  # white text, in the bottom quarter only
    pose_render.write_srt(str(tmp_path / "sub.srt"), "你好", 2.5)
    assert (tmp_path / "sub.srt").read_text(encoding="utf-8") == "1\n00:00:00,000 --> 00:00:02,500\n你好\n\n"


MEMORY_PROBE = """
import json, os, sys
import numpy as np
import pose_extraction, pose_render

def high_water_kib():
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) for k, v in (l.split(":", 1) for l in f) if k in ("VmHWM", "VmRSS")}

growth = {}
rng = np.random.default_rng(0)
for frames in (10, 200, 20000):  # the first render, whose encoder start-up allocates for good, is not compared
    path = os.path.join(sys.argv[1], f"{frames}.pkl")
    keypoints = rng.uniform(0.1, 0.9, (frames, 1, 133, 2)).astype(np.float32)
    scores = np.where(rng.random((frames, 1, 133)) < 0.05, 0.9, 0.1).astype(np.float32)
    pose_extraction.write_pose({"keypoints": keypoints, "scores": scores, "w_h": (64, 48)}, path)
    del keypoints, scores
    clip = pose_render.read_pose(path)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    before = high_water_kib()["VmRSS"]
    written = pose_render.render_clip([clip], os.path.join(sys.argv[1], f"{frames}.mp4"), progress=False)
    growth[frames] = high_water_kib()["VmHWM"] - before
    assert written == frames
    del clip
print(json.dumps(growth))
"""


@pytest.mark.slow  # 5-10 s on 2 cores (20,000 frames drawn and encoded)
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's resettable VmHWM")
def test_rendering_memory_does_not_grow_with_the_length(tmp_path):
    """Peak RSS while rendering 200 and 20,000 frames (64x48 canvas: all 20,000 frames kept would be 184 MB;
    the pose arrays, 32 MB, are loaded before the measure starts: a pickle cannot be read in pieces)."""
    result = e2e.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path)], timeout=300, threads=1)
    assert result.returncode == 0, result.stderr[-2000:]
    growth = {int(k): v for k, v in json.loads(result.stdout.splitlines()[-1]).items()}
    assert growth[20000] - growth[200] < 4 * 1024, growth  # KiB: noise, far from 184 MB


def test_the_benchmark_reports_drawing_and_encoding(tmp_path):
    result = e2e.run([sys.executable, "script/benchmark.py", "render", "--frames", "4", "--size", "64x48",
                      "--repeats", "1"], timeout=300, threads=1)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["frames"] == 4 and figures["size"] == [64, 48]
    assert all(figures[k] > 0 for k in ("draw_ms_per_frame", "mp4_encode_ms_per_frame", "gif_encode_ms_per_frame"))


@pytest.mark.slow  # a model is built and translates (15-30 s on 2 cores)
def test_extraction_previews_and_translation_renders(demo_root, tmp_path):
    """extract_poses --preview 1 writes the first video's skeleton beside its pickle; translate_video --render
    writes the video with its skeleton and the translation, and the translation as a .srt subtitle."""
    import torch

    import tiny_pose_models as tiny
    from models import Uni_Sign
    from test_video import demo_args
    det, pose_model = tiny.make_models(str(tmp_path))
    (tmp_path / "videos").mkdir()
    boxes = [[tiny.moving_box(t, SIZE, (50, 100))] for t in range(8)]
    for name in ("a", "b"):
        video = tiny.write_video(str(tmp_path / "videos" / f"{name}.mp4"), boxes, SIZE)
    models = ["--det_model", det, "--pose_model", pose_model]
    result = e2e.run([sys.executable, "script/extract_poses.py", "--src", str(tmp_path / "videos"), "--out",
                      str(tmp_path / "poses"), "--preview", "1", *models], timeout=300, threads=1)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "poses")) == ["a.pkl", "a.preview.mp4", "b.pkl"]
    assert_video_with_skeleton(tmp_path / "poses" / "a.preview.mp4", 8)

    torch.manual_seed(0)
    args = demo_args(demo_root)
    torch.save({"model": Uni_Sign(args).state_dict(), "args": vars(args)}, tmp_path / "fresh.pth")
    result = e2e.run([sys.executable, "script/translate_video.py", video, "--finetune", str(tmp_path / "fresh.pth"),
                      "--json", "--language", "English", "--render", str(tmp_path / "render"), *models],
                     timeout=300, threads=1)
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout.splitlines()[-1])
    assert line["render"] == str(tmp_path / "render" / "b.mp4")
    assert_video_with_skeleton(tmp_path / "render" / "b.mp4", 8)
    srt = (tmp_path / "render" / "b.srt").read_text(encoding="utf-8")
    assert srt == f"1\n00:00:00,000 --> 00:00:00,320\n{line['translation']}\n\n"  # 8 frames at 25 fps


def assert_video_with_skeleton(path, frames):
    """The video at `path` has `frames` frames of SIZE, and its first shows the body's colour (approximately:
    mp4 is lossy) where the stand-in's white box was not (the box is drawn white on black)."""
    _, images = read_video(path)
    assert len(images) == frames and images[0].shape == (SIZE[1], SIZE[0], 3)
    body = np.abs(images[0].astype(int) - pose_render.PART_COLOURS["body"]).max(axis=-1) < 50
    assert body.sum() > 5

"""Videos -> poses -> translations: rtmlib's real pipeline on tiny stand-in models (script/tiny_pose_models.py)."""
import argparse
import json
import os
import pickle
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import datasets
import e2e
from losses import training_loss
import model_io
import pose_extraction
import tiny_pose_models as tiny

SIZE = (320, 240)
PERSON = (50, 100)  # w, h of a drawn person: the pose crop magnifies it about 2x


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny.make_models(str(tmp_path_factory.mktemp("pose_models")))


@pytest.fixture(scope="module")
def estimator(models):
    return pose_extraction.PoseEstimator(det_model=models[0], pose_model=models[1])


def moving_person(frames=24, empty=()):
    return [[] if t in empty else [tiny.moving_box(t, SIZE, PERSON)] for t in range(frames)]


def run(*args):
    return e2e.run([sys.executable, *args], timeout=300, threads=1)


def test_keypoints_land_where_the_picture_puts_them(estimator, tmp_path):
    video = tiny.write_video(str(tmp_path / "clip.mp4"), moving_person(empty=(7, 8)), SIZE)
    pose = pose_extraction.extract_video(video, estimator)
    assert pose["keypoints"].shape == (24, 1, 133, 2) and pose["keypoints"].dtype == np.float32
    assert pose["scores"].shape == (24, 1, 133) and pose["scores"].dtype == np.float32
    assert pose["w_h"] == SIZE and pose["fps"] == pytest.approx(25.0)
    assert pose["num_fallback_frames"] == 2
    pixels = pose["keypoints"][:, 0] * np.array(SIZE, dtype=np.float32)  # stored divided by (w, h)
    for t in range(24):
        if t in (7, 8):  # nobody: the whole-frame fallback ran, and the stand-in finds no blob there
            assert (pose["scores"][t] == 0).all()
            continue
        error = np.abs(pixels[t] - tiny.expected_keypoints(tiny.moving_box(t, SIZE, PERSON)))
        assert error.max() < 1.0, (t, error.max())
        assert (pose["scores"][t] > 0.9).all()


@pytest.mark.parametrize("small_first", [True, False])
def test_the_largest_person_is_kept(estimator, tmp_path, small_first):
    small, large = (20, 60, 60, 140), (180, 40, 260, 200)
    if not small_first:  # the detector lists the left half's person first: size, not order, must decide
        small, large = (260, 60, 300, 140), (30, 40, 110, 200)
    video = tiny.write_video(str(tmp_path / "two.mp4"), [[small, large]] * 3, SIZE)
    pose = pose_extraction.extract_video(video, estimator)
    pixels = pose["keypoints"][:, 0] * np.array(SIZE, dtype=np.float32)
    assert np.abs(pixels - tiny.expected_keypoints(large)).max() < 1.0


def test_no_person_and_broken_videos_are_named_errors(estimator, tmp_path):
    nobody = tiny.write_video(str(tmp_path / "nobody.mp4"), [[]] * 5, SIZE)
    with pytest.raises(pose_extraction.NoPersonError, match="nobody.mp4: no person detected in any of its 5 frames"):
        pose_extraction.extract_video(nobody, estimator)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4000))
    with pytest.raises(pose_extraction.VideoError, match="garbage.mp4"):
        pose_extraction.extract_video(str(garbage), estimator)
    good = tiny.write_video(str(tmp_path / "good.mp4"), moving_person(10), SIZE)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(good, "rb").read()[:1500])  # an interrupted copy
    with pytest.raises(pose_extraction.VideoError, match="truncated.mp4"):
        pose_extraction.extract_video(str(truncated), estimator)


def test_model_flags_are_checked(models):
    with pytest.raises(pose_extraction.ModelError, match="--det_model /nowhere/det.onnx: no such file"):
        pose_extraction.PoseEstimator(det_model="/nowhere/det.onnx", pose_model=models[1])
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(pose_extraction.ModelError, match="onnxruntime-gpu"):
            pose_extraction.PoseEstimator(det_model=models[0], pose_model=models[1], device="cuda")


def test_a_cuda_session_that_fell_back_to_the_cpu_is_refused(models, monkeypatch):
    """onnxruntime-gpu whose CUDA provider fails to load runs on the CPU with only a warning: refused instead."""
    import onnxruntime
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(pose_extraction.ModelError, match="fell back to the CPU"):
        pose_extraction.PoseEstimator(det_model=models[0], pose_model=models[1], device="cuda")


def test_folder_run_mirrors_paths_skips_failures_and_resumes(models, tmp_path):
    src, out = tmp_path / "videos", tmp_path / "poses"
    tiny.write_video(str(src / "signer1" / "a.mp4"), moving_person(12), SIZE)
    tiny.write_video(str(src / "b.mp4"), moving_person(8, empty=(2,)), SIZE)
    (src / "broken.mp4").write_bytes(b"not a video" * 50)
    flags = ["--det_model", models[0], "--pose_model", models[1]]
    first = run("script/extract_poses.py", "--src", str(src), "--out", str(out), "--workers", "2", *flags)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "failed: " + str(src / "broken.mp4") in first.stdout and "extracted 2 videos" in first.stdout
    assert "1 of 8 frames without a detected person" in first.stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == ["b.pkl", "signer1/a.pkl"]
    before = (out / "b.pkl").stat().st_mtime_ns
    (src / "broken.mp4").unlink()
    tiny.write_video(str(src / "c.mp4"), moving_person(6), SIZE)  # a video added since
    second = run("script/extract_poses.py", "--src", str(src), "--out", str(out), *flags)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 of 3 videos already have a pose file" in second.stdout and "extracted 1 videos" in second.stdout
    assert (out / "b.pkl").stat().st_mtime_ns == before and (out / "c.pkl").is_file()
    keypoints, scores = datasets.load_pose(str(out / "signer1" / "a.pkl"))
    assert keypoints.shape == (12, 133, 2) and scores.shape == (12, 133)


def demo_args(demo_root):
    return SimpleNamespace(mt5_path=demo_root["mt5_path"], dataset="Demo", use_hyperbolic=True, hyp_text_cmp="token",
                           hyp_text_emb_src="decoder", max_length=256, num_beams=2, max_tgt_len=12)


def test_extracted_pickle_loads_and_trains_one_step(estimator, demo_root, tmp_path):
    from models import Uni_Sign
    video = tiny.write_video(str(tmp_path / "clip.mp4"), moving_person(20), SIZE)
    pose_extraction.write_pose(pose_extraction.extract_video(video, estimator), str(tmp_path / "clip.pkl"))
    torch.manual_seed(0)
    model = Uni_Sign(demo_args(demo_root))
    sample = {"name": "clip", "pose_path": str(tmp_path / "clip.pkl"), "text": "你好"}
    item = datasets.PoseDataset("Demo", "train", [sample])[0]
    assert {p: tuple(v.shape) for p, v in item["pose"].items()} == {"body": (20, 9, 3), "left": (20, 21, 3),
                                                                     "right": (20, 21, 3), "face_all": (20, 18, 3)}
    assert item["pose"]["body"][..., 2].min() > 0.9  # every body point confident: none zeroed
    batch = datasets.PoseCollator(model.mt5_tokenizer, "Demo")([item])
    loss = training_loss(model, batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    body_grads = [p.grad for name, p in model.named_parameters() if name.startswith("gcn_modules.body")]
    assert body_grads and all(g is not None for g in body_grads) and sum(g.abs().sum() for g in body_grads) > 0


def test_translate_video_prints_what_evaluation_would(demo_root, models, tmp_path):
    from models import Uni_Sign
    torch.manual_seed(0)
    args = demo_args(demo_root)
    checkpoint = tmp_path / "fresh.pth"
    torch.save({"model": Uni_Sign(args).state_dict(), "args": vars(args)}, checkpoint)
    video = tiny.write_video(str(tmp_path / "clip.mp4"), moving_person(16), SIZE)
    missing = str(tmp_path / "gone.mp4")
    (tmp_path / "gone.mp4").write_bytes(b"\0" * 100)
    result = run("script/translate_video.py", video, missing, "--finetune", str(checkpoint), "--json", "--language",
                 "English", "--save_pose", str(tmp_path / "poses"), "--det_model", models[0], "--pose_model", models[1])
    assert result.returncode == 1 and "error: " + missing in result.stderr  # the broken one is named, the other done
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1 and lines[0]["video"] == video and lines[0]["frames"] == lines[0]["frames_used"] == 16
    # The same checkpoint, loaded the one way, on the saved pickle through the evaluation dataset.
    read = model_io.read_model(str(checkpoint))
    model = Uni_Sign.from_pretrained(str(checkpoint), read=read)
    saved_args = argparse.Namespace(**read["args"])
    sample = {"name": "clip", "pose_path": lines[0]["pose_file"], "text": ""}
    item = datasets.PoseDataset("Demo", "test", [sample])[0]
    collator = datasets.PoseCollator(model.mt5_tokenizer, saved_args.dataset)
    collator.prompt = datasets.PROMPTS["English"]  # --language English over the Demo dataset's Chinese
    expected = model.generate(collator([item]), num_beams=saved_args.num_beams, max_new_tokens=saved_args.max_tgt_len)
    assert lines[0]["translation"] == expected[0] and expected[0]
    with open(lines[0]["pose_file"], "rb") as f:
        assert pickle.load(f)["w_h"] == SIZE


def test_saved_poses_of_videos_sharing_a_name_are_refused(tmp_path, capsys):
    import translate_video
    argv = [str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.avi"), "--finetune", str(tmp_path),
            "--save_pose", str(tmp_path / "poses")]
    with pytest.raises(SystemExit):
        translate_video.main(translate_video.get_args_parser().parse_args(argv))
    assert "several videos are named 'clip'" in capsys.readouterr().err


def test_generation_flags_are_checked_first(tmp_path, capsys):
    """0 beams or 0 new tokens: one line naming the flag, before any model or video is read (was: 0 silently
    meant the checkpoint's value, and negative numbers a traceback from transformers). In this process."""
    import translate_video
    for flag in ("--num_beams", "--max_tgt_len"):
        argv = [str(tmp_path / "clip.mp4"), "--finetune", str(tmp_path / "model"), flag, "0"]
        with pytest.raises(SystemExit) as stop:
            translate_video.main(translate_video.get_args_parser().parse_args(argv))
        assert stop.value.code == 1
        expected = f"error: {flag} must be at least 1 (got 0); leave it out to use the checkpoint's\n"
        assert capsys.readouterr().err == expected


@pytest.mark.parametrize("script, flag", [("script/extract_poses.py", "--out"),
                                          ("script/translate_video.py", "--save_pose"),
                                          ("script/plot_embeddings.py", "--output_dir")])
def test_an_output_folder_under_a_file_is_refused_before_any_work(tmp_path, script, flag):
    """Was a traceback after the work (translate_video, plot_embeddings), or every video extracted and then
    skipped one by one (extract_poses)."""
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    inputs = {"script/extract_poses.py": ["--src", str(tmp_path / "videos")],
              "script/translate_video.py": [str(tmp_path / "videos" / "clip.mp4"), "--finetune", str(tmp_path)],
              "script/plot_embeddings.py": ["--finetune", str(tmp_path)]}[script]
    result = run(script, *inputs, flag, str(a_file / "out"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: {flag} {a_file / 'out'} cannot be written" in result.stderr and a_file.read_text() == "not a folder"


def test_pose_paths_mirror_the_video_tree(tmp_path):
    (tmp_path / "v" / "s1").mkdir(parents=True)
    for name in ("v/s1/a.mp4", "v/b.MOV", "v/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    videos = pose_extraction.find_videos(str(tmp_path / "v"))
    assert videos == [str(tmp_path / "v" / "b.MOV"), str(tmp_path / "v" / "s1" / "a.mp4")]
    assert pose_extraction.pose_path_for(videos[1], str(tmp_path / "v"), "out") == os.path.join("out", "s1", "a.pkl")
    single = str(tmp_path / "v" / "s1" / "a.mp4")
    assert pose_extraction.pose_path_for(single, single, "out") == os.path.join("out", "a.pkl")


def test_translate_video_in_process_leaves_autograd_on(tmp_path):
    """main() is called in-process by tests and tools: it must not switch autograd off for the caller (it once
    did, globally, and every later test of that pytest worker that trained failed)."""
    import torch

    import translate_video
    with pytest.raises(SystemExit):
        translate_video.main(translate_video.get_args_parser().parse_args([str(tmp_path / "missing.mp4"),
                                                                            "--finetune", str(tmp_path)]))
    assert torch.is_grad_enabled()

"""captions.py and pose_clips.py: long pose files cut into clips by .vtt / .srt / How2Sign-CSV captions, the split
by video, every bad caption case as one error line, and a stage-1 run on such a corpus resumed exactly."""
import argparse
import os
import sys

import numpy as np
import pytest
import torch

import captions
import datasets
import pose_clips
from test_datasets import signer_frames, write_pose

VTT = """WEBVTT
Kind: captions
Language: en

NOTE written for this test

1
00:00:00.480 --> 00:00:02.120 align:start position:0%
Hello, <c>my</c> name
is Ann &amp; I sign.

00:02.500 --> 00:04.250
[MUSIC]

00:00:04.300 --> 00:00:07.777
♪ <i>We</i> LEARN ASL. ♪

00:00:08.000 --> 00:00:08.100
too short

00:00:09.010 --> 00:00:11.990
Last one?
"""
SRT = """1
00:00:00,480 --> 00:00:02,120
Hello, <i>my</i> name
is Ann &amp; I sign.

2
00:00:04,300 --> 00:00:07,777
{\\an8}We LEARN ASL.

3
00:00:09,010 --> 00:00:11,990
Last one?
"""
EXPECTED = [(0.48, 2.12, "Hello, my name is Ann & I sign."), (4.3, 7.777, "We LEARN ASL."), (9.01, 11.99, "Last one?")]


def settings(**overrides):
    values = dict(task="SLT", max_length=10_000, skip_bad_samples=False, min_clip_s=0.2, max_clip_s=60.0, fps=0.0)
    values.update(overrides)
    return argparse.Namespace(**values)


def long_video(path, seconds, fps, seed=0, as_list=False, store_fps=True):
    """A long pose pickle as extract_poses.py writes it (one array per key, or RTMPose's per-frame list)."""
    keypoints, scores = signer_frames(int(round(seconds * fps)), seed)
    extra = {"fps": fps, "w_h": (640, 480)} if store_fps else {}
    write_pose(path, keypoints, scores, as_list=as_list, **extra)
    return keypoints, scores


def corpus(folder, videos):
    """videos: {name: (fps, captions text, extension)}; every video 12 s long."""
    folder.mkdir(exist_ok=True)
    frames = {}
    for seed, (name, (fps, text, extension)) in enumerate(videos.items()):
        frames[name] = long_video(folder / f"{name}.pkl", 12, fps, seed)
        (folder / f"{name}{extension}").write_text(text, encoding="utf-8")
    return frames


def build(folder, phase="train", label_path=None, dataset="Captions", **flags):
    captions._clip_index.cache_clear()
    return datasets.build_dataset(dataset, phase, settings(**flags), label_path=str(label_path or folder),
                                  pose_dir=str(folder))


def all_clips(folder, **flags):
    return [s for phase in ("train", "dev") for s in build(folder, phase, **flags).samples]


# ----------------------------------------------------------------------------- formats, times and cleaning
@pytest.mark.parametrize("fps", [25.0, 29.97])
def test_vtt_srt_and_how2sign_table_give_the_same_clips(tmp_path, fps, capsys):
    frames = corpus(tmp_path / "vtt", {"a": (fps, VTT, ".en.vtt"), "b": (fps, SRT, ".srt")})
    clips = {s["name"]: s for s in all_clips(tmp_path / "vtt")}
    assert "1 empty or sound-only, 1 shorter than --min_clip_s" in capsys.readouterr().out  # [MUSIC]; 0.1 s
    for video in ("a", "b"):
        got = sorted((s["frames"], s["text"]) for s in clips.values() if s["name"].startswith(video + "_"))
        assert got == sorted(((round(start * fps), round(end * fps)), text) for start, end, text in EXPECTED)
    table = tmp_path / "how2sign_realigned_train.csv"  # How2Sign's columns, tab-separated, read as it is
    table.write_text("VIDEO_ID\tVIDEO_NAME\tSENTENCE_ID\tSENTENCE_NAME\tSTART_REALIGNED\tEND_REALIGNED\tSENTENCE\n"
                     + "".join(f"x\ta\ts{i}\ta_{i}\t{start}\t{end}\t{text}\n"
                               for i, (start, end, text) in enumerate(EXPECTED)), encoding="utf-8")
    rows = build(tmp_path / "vtt", label_path=table).samples
    assert [(s["name"], s["frames"], s["text"]) for s in rows] == [
        (f"a_{i}", (round(start * fps), round(end * fps)), text) for i, (start, end, text) in enumerate(EXPECTED)]
    assert rows[0]["pose_path"] == os.path.join(str(tmp_path / "vtt"), "a.pkl")
    assert len(frames["a"][0]) == round(12 * fps)


def test_cleaning_keeps_case_and_punctuation_and_drops_sound_tags():
    assert captions.clean_text(["<c.colorE5E5E5>Hi</c>,", "  <00:00:01.200>THERE!  "]) == "Hi, THERE!"
    assert captions.clean_text(["[MUSIC]"]) == "" and captions.clean_text(["♪ ♪", "[Applause]"]) == ""
    assert captions.clean_text(["[laughs] Yes &lt;3"]) == "Yes <3"


def test_clips_too_short_too_long_or_empty_are_counted(tmp_path, capsys):
    corpus(tmp_path, {"a": (25.0, VTT, ".vtt"), "b": (25.0, VTT, ".vtt")})
    assert len(all_clips(tmp_path, max_clip_s=3.0)) == 2 * 2  # 4.3-7.777 s is longer than 3 s
    out = capsys.readouterr().out
    assert "2 empty or sound-only, 2 shorter than --min_clip_s, 2 longer than --max_clip_s" in out


# ----------------------------------------------------------------------------- reading a clip
@pytest.mark.parametrize("as_list", [False, True], ids=["arrays", "frame-list"])
def test_clip_frames_equal_the_clip_cut_into_its_own_file(tmp_path, as_list):
    folder = tmp_path / "corpus"
    folder.mkdir()
    keypoints, scores = long_video(folder / "a.pkl", 12, 29.97, as_list=as_list)
    long_video(folder / "b.pkl", 12, 29.97, seed=1)
    for name in ("a", "b"):
        (folder / f"{name}.vtt").write_text(VTT, encoding="utf-8")
    for phase in ("train", "dev"):
        dataset = build(folder, phase)
        for i, sample in enumerate(dataset.samples):
            if not sample["name"].startswith("a_"):
                continue
            start, end = sample["frames"]
            cut = write_pose(tmp_path / f"cut{i}.pkl", keypoints[start:end], scores[start:end], as_list=as_list)
            alone = datasets.PoseDataset("Captions", phase, [dict(sample, pose_path=cut, frames=None)], 10_000)[0]
            clip = dataset[i]
            assert all(torch.equal(clip["pose"][part], alone["pose"][part]) for part in clip["pose"])
            assert len(clip["pose"]["body"]) == end - start


def test_a_real_recordings_pose_file_with_written_captions_gives_its_clips(tmp_path):
    """A real signer's MediaPipe `.pose` file (170 frames at 24 fps, tests/data/real_poses) captioned for this test:
    each clip is the frames its times give, equal to the same frames of the whole file, fps from the file."""
    import shutil
    real = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "real_poses", "mediapipe.pose")
    folder = tmp_path / "corpus"
    folder.mkdir()
    for video in ("signer", "again"):  # two videos: one of them is held out as dev
        shutil.copy(real, folder / f"{video}.pose")
        (folder / f"{video}.en.vtt").write_text("WEBVTT\n\n00:00:00.250 --> 00:00:02.125\n[MUSIC] Hello,\nthere.\n\n"
                                               "00:00:03.000 --> 00:00:06.900\nA second sentence.\n", encoding="utf-8")
    whole_keypoints, whole_scores = datasets.load_pose(real)
    samples = [s for phase in ("train", "dev") for s in build(folder, phase).samples]
    assert sorted(s["text"] for s in samples) == ["A second sentence."] * 2 + ["Hello, there."] * 2
    for sample in samples:
        start, end = sample["frames"]
        assert (start, end) in ((round(0.25 * 24), round(2.125 * 24)), (round(3.0 * 24), round(6.9 * 24)))
        keypoints, scores = datasets.load_sample_pose(sample)
        assert np.array_equal(keypoints, whole_keypoints[start:end]) and np.array_equal(scores, whole_scores[start:end])


def test_array_layout_is_read_without_the_rest_of_the_file(tmp_path, monkeypatch):
    keypoints, scores = long_video(tmp_path / "long.pkl", 120, 25.0)
    monkeypatch.setattr(datasets, "load_restricted", None)  # the whole-file reader must not be used
    pose_clips._layout.cache_clear()
    read = []
    fromfile = np.fromfile
    monkeypatch.setattr(np, "fromfile", lambda *a, **k: read.append(k["count"]) or fromfile(*a, **k))
    got, got_scores = datasets.load_pose(str(tmp_path / "long.pkl"), (100, 160))
    assert np.array_equal(got, keypoints[100:160]) and np.array_equal(got_scores, scores[100:160])
    assert read == [60 * 133 * 2, 60 * 133]  # the clip's values, not the video's 3,000 frames
    assert pose_clips.probe(str(tmp_path / "long.pkl")) == (3000, 25.0)


# ----------------------------------------------------------------------------- splits
def test_split_is_by_video_deterministic_and_disjoint(tmp_path):
    names = [f"vid{i:03d}" for i in range(150)]
    corpus(tmp_path, {name: (25.0, SRT, ".srt") for name in names})
    train, dev = (build(tmp_path, phase).samples for phase in ("train", "dev"))
    videos = [{s["name"].rsplit("_", 1)[0] for s in split} for split in (train, dev)]
    assert len(videos[1]) == 2 and not videos[0] & videos[1] and videos[0] | videos[1] == set(names)
    assert [s["name"] for s in build(tmp_path, "test").samples] == [s["name"] for s in dev]
    (tmp_path / "vid000.srt").rename(tmp_path / "vid000.en.srt")  # renaming or re-listing changes nothing
    assert [s["name"] for s in build(tmp_path, "dev").samples] == [s["name"] for s in dev]
    listed = tmp_path / "youtube_asl_video_ids.txt"
    listed.write_text("\n".join(reversed(names)) + "\n", encoding="utf-8")
    assert [s["name"] for s in build(tmp_path, "dev", label_path=listed, dataset="YouTubeASL").samples] == \
        [s["name"] for s in dev]


# ----------------------------------------------------------------------------- bad input
GOOD = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nfine\n\n"
BAD_CASES = {
    "no header": ("NOT WEBVTT\n", "a.vtt:1: a WebVTT file starts with 'WEBVTT'"),
    "bad timing": (GOOD + "00:00:03.000 -> 00:00:04.000\nx\n", "a.vtt:6: expected a cue's timing line"),
    "unreadable time": (GOOD + "00:00:03.000 --> 00:00:xx.000\nx\n", "a.vtt:6: unreadable timing line"),
    "reversed": (GOOD + "00:00:05.000 --> 00:00:04.000\nx\n", "a.vtt:6: caption times reversed"),
    "overlap": (GOOD + "00:00:01.500 --> 00:00:03.000\nx\n", "a.vtt:6: caption starts at 1.500 s, before the previous "
                "one (line 3) ends at 2.000 s"),
    "beyond": (GOOD + "00:00:11.000 --> 00:00:14.000\nx\n", "a.vtt:6: caption ends at 14.000 s, past the pose "
               "file's 300 frames (12.000 s at 25 fps)"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_caption_is_one_error_naming_file_and_line_or_skipped_and_counted(tmp_path, case, capsys):
    text, needle = BAD_CASES[case]
    corpus(tmp_path, {"a": (25.0, text, ".vtt"), "b": (25.0, GOOD, ".vtt"), "c": (25.0, GOOD, ".vtt")})
    with pytest.raises(datasets.LabelFileError, match="--skip_bad_samples") as error:
        build(tmp_path)
    assert needle in str(error.value) and len(str(error.value).splitlines()) == 1
    kept = all_clips(tmp_path, skip_bad_samples=True)
    out = capsys.readouterr().out
    assert "warning: --skip_bad_samples: skipped 1 bad" in out and needle in out
    assert len(kept) == 2 + (case in ("reversed", "overlap", "beyond"))  # a bad cue costs only itself


@pytest.mark.parametrize("case", ["no pose", "no captions", "two caption files", "no fps"])
def test_video_without_pose_captions_or_fps_is_named(tmp_path, case, capsys):
    corpus(tmp_path, {"a": (25.0, GOOD, ".vtt"), "b": (25.0, GOOD, ".vtt"), "c": (25.0, GOOD, ".vtt")})
    needle = {"no pose": "video 'a' has no pose file", "no captions": "video 'a' has no captions",
              "two caption files": "video 'a' has 2 caption files",
              "no fps": "a.pkl: the pose file stores no fps"}[case]
    if case == "no pose":
        os.remove(tmp_path / "a.pkl")
    elif case == "no captions":
        os.remove(tmp_path / "a.vtt")
    elif case == "two caption files":
        (tmp_path / "a.en.vtt").write_text(GOOD, encoding="utf-8")
    else:
        long_video(tmp_path / "a.pkl", 12, 25.0, store_fps=False)
    with pytest.raises(datasets.LabelFileError, match=needle):
        build(tmp_path)
    assert len(all_clips(tmp_path, skip_bad_samples=True)) == 2 and needle in capsys.readouterr().out
    if case == "no fps":
        assert len(all_clips(tmp_path, fps=25.0)) == 3  # --fps supplies it


def test_caption_ending_just_past_the_video_is_cut_and_counted(tmp_path, capsys):
    corpus(tmp_path, {v: (25.0, GOOD + "00:00:11.000 --> 00:00:12.600\nend\n", ".vtt") for v in "abc"})
    clips = [s for s in all_clips(tmp_path) if s["text"] == "end"]
    assert [s["frames"] for s in clips] == [(275, 300)] * 3 and "3 cut at the video's end" in capsys.readouterr().out


# ----------------------------------------------------------------------------- as a user runs it
def pretraining_args(mt5_path, folder, out):
    return ["--captions", str(folder), "--mt5_path", mt5_path, "--output_dir", str(out), "--epochs", "2",
            "--quick_break", "2", "--batch_size", "4", "--gradient_accumulation_steps", "1", "--lr", "1e-3",
            "--warmup-epochs", "0", "--num_workers", "0", "--num_beams", "1", "--max_tgt_len", "8", "--max_length", "8",
            "--use_hyperbolic", "--hyp_text_emb_src", "decoder"]  # as base_args, which fine-tunes it; without it a resumed run's checkpoint restarts its global_step count (models.py)


FOUR_CUES = "WEBVTT\n\n" + "".join(f"00:00:0{2 * i}.250 --> 00:00:0{2 * i + 1}.900\nsentence {i} of VIDEO.\n\n"
                                    for i in range(4))


def test_bad_corpus_stops_pretraining_with_one_error_line(tiny_demo, tmp_path, capsys):
    import fine_tuning
    import pretraining
    corpus(tmp_path / "c", {v: (25.0, FOUR_CUES + "00:00:09.000 --> 00:00:08.000\nx\n", ".vtt") for v in "abc"})
    args = pretraining.get_args_parser().parse_args(pretraining_args(tiny_demo["mt5_path"], tmp_path / "c",
                                                                     tmp_path / "out"))
    with pytest.raises(SystemExit):
        fine_tuning.run(captions.resolve_captions(args))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ".vtt:15: caption times reversed" in errors[0] and "--skip_bad_samples" in errors[0]


@pytest.mark.slow
def test_pretraining_on_captions_resumes_exactly_and_fine_tunes(tiny_demo, tmp_path):
    """Two epochs of stage 1 on a folder of long videos with .vtt captions (3 train videos, 1 held out, 4 clips
    each), stopped at epoch 1's first step and resumed: the same run bit for bit as an uninterrupted one; its
    checkpoint then initialises fine-tuning as the CSL-News stage-1 model does."""
    from e2e import base_args, check_ok, read_log, run
    from test_engine import assert_same_run, stop_at
    folder = tmp_path / "corpus"
    corpus(folder, {f"v{i}": (25.0 if i % 2 else 29.97, FOUR_CUES.replace("VIDEO", f"video {i}"), ".en.vtt")
                    for i in range(4)})
    stop = stop_at(3).replace("fine_tuning.run(fine_tuning.get_args_parser().parse_args(sys.argv[1:]))",
                              "import captions\nimport pretraining\nparser = pretraining.get_args_parser()\n"
                              "fine_tuning.run(captions.resolve_captions(parser.parse_args(sys.argv[1:])))")
    assert "resolve_captions" in stop  # test_engine's script, run through pretraining.py's command line
    whole = check_ok(run([sys.executable, "pretraining.py", *pretraining_args(tiny_demo["mt5_path"], folder,
                                                                               tmp_path / "whole")]))
    assert "captions: 16 clips from 4 of 4 videos" in whole.stdout
    stopped = run([sys.executable, "-c", stop, *pretraining_args(tiny_demo["mt5_path"], folder, tmp_path / "parts")])
    assert stopped.returncode != 0 and [r["epoch"] for r in read_log(tmp_path / "parts")] == [0]
    check_ok(run([sys.executable, "pretraining.py", *pretraining_args(tiny_demo["mt5_path"], folder,
                                                                      tmp_path / "parts"), "--resume"]))
    assert_same_run(tmp_path / "whole", tmp_path / "parts", epochs=2)
    args = base_args(tiny_demo, tmp_path / "ft", epochs=1, steps=1) + ["--finetune", str(tmp_path / "whole" /
                                                                                         "checkpoint.pth")]
    result = check_ok(run([sys.executable, "fine_tuning.py", *args]))
    missing = [line for line in result.stdout.splitlines() if line.strip().startswith("missing:")]
    assert not [k for k in missing if "stgcn" in k or "mt5_model" in k], missing  # the encoder and mT5 load
    assert [r["epoch"] for r in read_log(tmp_path / "ft")] == [0]


@pytest.mark.slow
def test_index_benchmark_runs_small_and_a_clip_costs_less_than_a_csl_news_sample():
    from test_speed import run_benchmark
    stdout, summary = run_benchmark("index", "--youtube_asl", "--videos", "40", "--clips_per_video", "5",
                                    "--workers", "1", "--video_s", "120")
    assert summary["clips"] == 39 * 5 and "30-s clip: from a 120-s file" in stdout  # one video held out
    assert summary["index_bytes_per_clip"] < summary["news_index_bytes_per_sample"]
    assert summary["clip_read_ms"] > 0 and summary["own_file_read_ms"] > 0


def test_clip_index_columns_slice_together_and_names_are_unique_in_scored_splits(tmp_path):
    corpus(tmp_path, {"a": (25.0, SRT, ".srt"), "b": (25.0, SRT, ".srt")})
    index = build(tmp_path, "train").samples
    whole = list(index)
    tail = index[1:]
    assert list(tail) == whole[1:] and tail.frames.base is index.frames.base
    assert len(whole) == 3 and len(index.poses.table) == 2  # a pose path once per video (train and dev share it)
    table = tmp_path / "dev.tsv"
    table.write_text("video\tstart\tend\ttext\tname\na\t0.5\t1.5\tone\tsame\na\t2.0\t3.0\ttwo\tsame\n",
                     encoding="utf-8")
    with pytest.raises(datasets.LabelFileError, match="share the name 'same'"):
        build(tmp_path, "dev", label_path=table)
    assert len(build(tmp_path, "train", label_path=table)) == 2

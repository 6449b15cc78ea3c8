"""The compact sample index, the streamed JSON reader and the label-file errors (label_files.read_labels)."""
import argparse
import gzip
import json
import os
import pickle
import random

import pytest

import datasets
from e2e import base_args
from in_process import fine_tuning_refuses
from sample_index import SampleIndex, StringTableBuilder, json_array_blocks


def args(**overrides):
    values = dict(max_length=256, task="SLT", skip_bad_samples=False)
    values.update(overrides)
    return argparse.Namespace(**values)


def read_blocks(path, block_chars):
    return [element for block in json_array_blocks(path, block_chars) for element in block]


TRICKY = ["}, {", "},{\"video\": 1}", "a,b", "\\", "\"", "你好", "]", "[{}]", "", " , "]


@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("block_chars", [1, 7, 64, 1 << 16])
def test_streamed_json_blocks_equal_json_load(tmp_path, indent, block_chars):
    rng = random.Random(block_chars)
    entries = [{"video": f"v{i}.mp4", "pose": f"d/v{i}.pkl", "text": rng.choice(TRICKY) + str(i),
                "meta": {"n": i, "tags": [rng.choice(TRICKY)]}} for i in range(60)]
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(entries, ensure_ascii=False, indent=indent), encoding="utf-8")
    assert read_blocks(path, block_chars) == entries
    path.write_text("  [ ]\n", encoding="utf-8")
    assert read_blocks(path, block_chars) == []


@pytest.mark.parametrize("text", ['{"a": 1}', '[{"a": 1}, {"a": 2}', '[{"a": 1},, {"a": 2}]',
                                  '[{"a": 1}, {"a": 2}] extra', '[{"a": "unterminated}, {"b": 2}]', ""])
def test_streamed_json_rejects_what_is_not_a_json_list(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    for block_chars in (3, 1 << 16):
        with pytest.raises(ValueError):
            read_blocks(path, block_chars)


def test_sample_index_items_slices_and_iteration():
    poses, texts = StringTableBuilder(), StringTableBuilder()
    poses.add(["a/x.pkl", "b/y.pkl"])
    poses.add(["c/z.pkl"])
    texts.add(["一", "", "three"])
    index = SampleIndex(poses.build(), texts.build(), "/poses")
    assert len(index) == 3
    assert index[0] == {"name": "a/x", "pose_path": os.path.join("/poses", "a/x.pkl"), "text": "一"}
    assert index[-1]["name"] == "c/z" and index[1]["text"] == ""
    tail = index[1:]
    assert len(tail) == 2 and list(tail) == list(index)[1:] and tail.poses.data is index.poses.data
    assert [s["name"] for s in index] == ["a/x", "b/y", "c/z"]
    with pytest.raises(IndexError):
        index[3]


# ----------------------------------------------------------------------------- label files a user gets wrong
def write_labels(path, labels):
    with gzip.open(path, "wb") as f:
        pickle.dump(labels, f)


def label(name, **extra):
    return {"name": name, "video_path": f"{name}.mp4", "text": f"text of {name}", **extra}


@pytest.mark.parametrize("content", [b"", b"name text\nclip1 hello\n", gzip.compress(b"not a pickle")],
                         ids=["empty", "plain-text", "gzip-not-a-pickle"])  # ids: gzip stamps the time
def test_unreadable_label_file_names_itself(tmp_path, content):
    path = tmp_path / "labels.train"
    path.write_bytes(content)
    with pytest.raises(datasets.LabelFileError, match="labels.train") as error:
        datasets.build_dataset("CSL_Daily", "train", args(), label_path=str(path), pose_dir=str(tmp_path))
    assert ("empty (0 bytes)" in str(error.value)) == (content == b"")


def test_csl_news_json_errors_name_the_file(tmp_path):
    path = tmp_path / "CSL_News_Labels.json"
    for text in ("", "not json", '[{"video": "v.mp4", "text": "no pose"}]', '[{"pose": 3, "text": "x"}]'):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(datasets.LabelFileError, match="CSL_News_Labels.json"):
            datasets.build_dataset("CSL_News", "train", args(), label_path=str(path), pose_dir=str(tmp_path))


def test_cslr_without_glosses_says_which_task_fits(tmp_path):
    path = tmp_path / "labels.dev"
    write_labels(path, {"a": label("a")})
    with pytest.raises(datasets.LabelFileError, match="--task CSLR.*--task SLT"):
        datasets.build_dataset("How2Sign", "dev", args(task="CSLR"), label_path=str(path), pose_dir=str(tmp_path))
    news = tmp_path / "CSL_News_Labels.json"  # no glosses at all (was: trained on its texts as if glosses)
    news.write_text(json.dumps([{"video": "v.mp4", "pose": "v.pkl", "text": "x"}]), encoding="utf-8")
    with pytest.raises(datasets.LabelFileError, match="CSL-News has no glosses.*--task SLT"):
        datasets.build_dataset("CSL_News", "train", args(task="CSLR"), label_path=str(news), pose_dir=str(tmp_path))


@pytest.mark.parametrize("text", ["", "  \u3000 "])
def test_an_empty_target_is_refused_naming_its_entry(tmp_path, text):
    """Was trained on (a target of </s> alone) and, in dev or test, scored (every prediction 0 against it)."""
    path = tmp_path / "labels.dev"
    write_labels(path, {"a": label("a"), "b": dict(label("b"), text=text)})
    with pytest.raises(datasets.LabelFileError, match="labels.dev: entry 'b' is malformed .*its text is empty"):
        datasets.build_dataset("CSL_Daily", "dev", args(), label_path=str(path), pose_dir=str(tmp_path))
    news = tmp_path / "CSL_News_Labels.json"
    news.write_text(json.dumps([{"video": "v.mp4", "pose": "v.pkl", "text": "x"},
                                {"video": "w.mp4", "pose": "w.pkl", "text": text}]), encoding="utf-8")
    with pytest.raises(datasets.LabelFileError, match="entry 1 \\(pose 'w.pkl'\\) has an empty 'text'"):
        datasets.build_dataset("CSL_News", "train", args(), label_path=str(news), pose_dir=str(tmp_path))


def test_empty_label_list_is_refused(tmp_path):
    path = tmp_path / "labels.train"
    write_labels(path, {})
    with pytest.raises(datasets.LabelFileError, match="no train samples"):
        datasets.build_dataset("CSL_Daily", "train", args(), label_path=str(path), pose_dir=str(tmp_path))


def test_duplicate_names_in_a_scored_split_are_refused(tmp_path):
    path = tmp_path / "labels.dev"
    write_labels(path, {"a": label("a"), "b": label("b"), "a2": dict(label("a"), text="another reference")})
    with pytest.raises(datasets.LabelFileError, match="share the name 'a'"):
        datasets.build_dataset("CSL_Daily", "dev", args(), label_path=str(path), pose_dir=str(tmp_path))
    assert len(datasets.build_dataset("CSL_Daily", "train", args(), label_path=str(path), pose_dir=str(tmp_path))) == 3


# ----------------------------------------------------------------------------- the same, as a user meets them
def demo_labels(small_demo, phase):
    with gzip.open(small_demo["label_paths"][phase], "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("case", ["zero_bytes", "plain_text", "cslr_without_gloss", "empty_train", "duplicate_dev"])
def test_bad_label_file_ends_in_one_error_line(small_demo, tmp_path, capsys, case):
    """fine_tuning.py's command line (run in this process) exits 1 with one `error:` line naming the label file."""
    phase = "dev" if case == "duplicate_dev" else "train"
    path = tmp_path / f"labels.{phase}"
    extra = []
    if case == "zero_bytes":
        path.write_bytes(b"")
    elif case == "plain_text":
        path.write_text("video text\nclip1 hello world\n", encoding="utf-8")
    elif case == "cslr_without_gloss":
        write_labels(path, {k: {f: v for f, v in label.items() if f != "gloss"}
                            for k, label in demo_labels(small_demo, "train").items()})
        extra = ["--task", "CSLR"]
    elif case == "empty_train":
        write_labels(path, {})
    else:
        labels = demo_labels(small_demo, "dev")
        first = next(iter(labels.values()))
        write_labels(path, {**labels, "copy": dict(first, text="another reference")})
    demo = dict(small_demo, label_paths=dict(small_demo["label_paths"], **{phase: str(path)}))
    error, _, _ = fine_tuning_refuses(capsys, base_args(demo, tmp_path / "out") + extra)
    assert str(path) in error
    assert not os.path.exists(tmp_path / "out" / "checkpoint.pth")


def test_string_table_round_trips_any_text():
    batches = [["a", "", "你好", "x\0y", ""], [], [""], ["\0"], ["last"]]
    builder = StringTableBuilder()
    for batch in batches:
        builder.add(batch)
    table = builder.build()
    flat = [s for batch in batches for s in batch]
    assert len(table) == len(flat) and [table[i] for i in range(len(table))] == flat

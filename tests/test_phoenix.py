"""PHOENIX-2014T: the shipped labels, the corpus's own CSV, the German prompt, and both BLEU protocols."""
import gzip
import json
import os
import pickle
import subprocess
import sys

import pytest
import sacrebleu

import config
import datasets
from data_config import DataConfig
import SLRT_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def args(**kw):
    return DataConfig(**kw)


def shipped(phase):
    with gzip.open(config.dev_label_paths["Phoenix2014T"].replace(".dev", f".{phase}"), "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("phase, count", [("train", 7096), ("dev", 519), ("test", 642)])
def test_shipped_labels_give_every_sample(tmp_path, phase, count):
    dataset = datasets.build_dataset("Phoenix2014T", phase, args(), pose_dir=str(tmp_path))
    assert len(dataset) == count
    labels = shipped(phase)
    first = dataset.samples[0]
    label = labels[first["name"]]
    assert first["name"].startswith(f"{phase}/") and first["text"] == label["text"]
    assert first["pose_path"] == os.path.join(str(tmp_path), first["name"] + ".pkl")
    cslr = datasets.build_dataset("Phoenix2014T", phase, args(task="CSLR"), pose_dir=str(tmp_path))
    assert cslr.samples[0]["text"] == " ".join(label["gloss"].split()) and cslr.samples[0]["text"].isupper()
    without_glosses = [name for name, label in labels.items() if not label["gloss"].strip()]
    assert len(cslr) == count - len(without_glosses)  # left out, and named on stderr
    assert all(name not in without_glosses for name in (cslr.samples[i]["name"] for i in range(len(cslr))))


def test_german_prompt():
    assert datasets.prompt_for("Phoenix2014T") == "Translate sign language video to German: "
    assert datasets.prompt_for("How2Sign").endswith("English: ")


def write_corpus_csv(path, labels):
    lines = ["name|video|start|end|speaker|orth|translation"]
    for name, label in labels:
        lines.append(f"{name.split('/', 1)[1]}|{name.split('/', 1)[1]}/1/*.png|-1|-1|Signer01|{label['gloss']}|"
                     f"{label['text']}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_corpus_csv_reads_as_the_labels(tmp_path):
    labels = list(shipped("dev").items())[:5]
    csv_path = tmp_path / "PHOENIX-2014-T.dev.corpus.csv"
    write_corpus_csv(csv_path, labels)
    for task in ("SLT", "CSLR"):
        from_csv = datasets.build_dataset("Phoenix2014T", "dev", args(task=task), label_path=str(csv_path),
                                          pose_dir=str(tmp_path))
        from_labels = datasets.build_dataset("Phoenix2014T", "dev", args(task=task), pose_dir=str(tmp_path))
        assert [from_csv.samples[i] for i in range(5)] == [from_labels.samples[i] for i in range(5)]


def test_a_broken_corpus_csv_is_one_label_error(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("name|video|start\nx|y|z\n", encoding="utf-8")
    with pytest.raises(datasets.LabelFileError, match=r"bad\.csv: expected PHOENIX-2014-T's corpus CSV"):
        datasets.build_dataset("Phoenix2014T", "dev", args(), label_path=str(csv_path), pose_dir=str(tmp_path))


HYPS = ["und nun die wettervorhersage für morgen", "im norden regen", "es bleibt trocken und sonnig."]
REFS = ["und nun die wettervorhersage für morgen donnerstag", "im norden und osten regen",
        "es bleibt meist trocken."]


def test_both_bleu_protocols_equal_sacrebleu():
    default = SLRT_metrics.evaluate(HYPS, REFS, "Phoenix2014T", "SLT")
    expected = sacrebleu.corpus_bleu(HYPS, [REFS])  # sacrebleu's defaults: 13a, exp (GFSLT-VLP, Uni-Sign)
    assert default["bleu4"] == pytest.approx(expected.score) and "tok:13a" in default["signature"]
    raw = SLRT_metrics.evaluate(HYPS, REFS, "Phoenix2014T", "SLT", bleu_tokenize="none")
    for order in range(1, 5):  # signjoey's raw corpus BLEU, one order at a time
        bleu = sacrebleu.metrics.BLEU(tokenize="none", smooth_method="floor", smooth_value=0.0,
                                      effective_order=True, max_ngram_order=order)
        assert raw[f"bleu{order}"] == pytest.approx(bleu.corpus_score(HYPS, [REFS]).score)
    assert "tok:none" in raw["signature"] and "smooth:floor" in raw["signature"]
    assert raw["bleu4"] != default["bleu4"]  # "trocken." is one token in one, two in the other
    assert SLRT_metrics.bleu_signature("none") == raw["signature"]


def test_slrt_metrics_cli_prints_both_protocols(tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(HYPS) + "\n", encoding="utf-8")
    ref.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "SLRT_metrics.py"), "--hyp", str(hyp), "--ref",
                          str(ref), "--dataset", "Phoenix2014T", "--bleu_tokenize", "both"],
                         capture_output=True, text=True, env=env, check=True).stdout
    result = json.loads(out)
    assert set(result) == {"13a", "none"}
    assert result["13a"] == SLRT_metrics.evaluate(HYPS, REFS, "Phoenix2014T", "SLT")
    assert "tok:none" in result["none"]["signature"]


@pytest.mark.slow
def test_fine_tuning_names_the_missing_pose_folder_in_one_line(tmp_path):
    from e2e import run
    result = run([sys.executable, "fine_tuning.py", "--dataset", "Phoenix2014T", "--pose_dir",
                  str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out")])
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(tmp_path / "nowhere") in errors[0] and "--layout phoenix" in errors[0]
    assert "Traceback" not in result.stderr

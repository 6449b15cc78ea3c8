"""Tests for SLRT_metrics: the literature's numbers, hand-computed cases, errors and the CLI."""
import json
import os
import subprocess
import sys

import pytest

import SLRT_metrics as M

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REFERENCE_DIR = os.path.join(REPO, "tests", "data", "reference_outputs")

# The literature's evaluation protocol (docs/design.md): Uni-Sign's released pose-only outputs, scored with the reference protocol.
TABLE = {
    ("csl_daily", "test"): (1176, 53.8698, 40.9948, 32.0866, 25.6986, 55.0035),
    ("csl_daily", "dev"): (1077, 53.2951, 40.5583, 31.6529, 25.2676, 54.3024),
    ("openasl", "test"): (976, 49.0914, 35.9074, 28.0991, 22.6435, 42.8345),
    ("openasl", "dev"): (967, 49.7092, 36.2181, 28.1153, 22.3835, 42.8130),
    ("how2sign", "test"): (2349, 39.3817, 26.4434, 19.2171, 14.4988, 34.5062),
}


def load_pair(dataset, split):
    base = os.path.join(REFERENCE_DIR, dataset, f"{split}_tmp_")
    hyp_names, hyps = M.read_reference_file(base + "pres.txt")
    ref_names, refs = M.read_reference_file(base + "refs.txt")
    assert hyp_names == ref_names
    return hyps, refs


@pytest.mark.parametrize("dataset,split", sorted(TABLE))
def test_reference_table_to_4_decimals(dataset, split):
    count, *expected = TABLE[(dataset, split)]
    hyps, refs = load_pair(dataset, split)
    assert len(hyps) == count
    result = M.translation_metrics(hyps, refs)
    got = [result[k] for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge")]
    assert [round(v, 4) for v in got] == expected
    assert "tok:13a" in result["signature"] and "smooth:exp" in result["signature"]


def test_cumulative_bleu_orders_match_sacrebleu():
    from sacrebleu.metrics import BLEU
    hyps, refs = load_pair("openasl", "dev")
    result = M.translation_metrics(hyps, refs)
    for order in range(1, 5):
        bleu = BLEU(max_ngram_order=order, tokenize="13a", smooth_method="exp")
        assert result[f"bleu{order}"] == pytest.approx(bleu.corpus_score(hyps, [refs]).score, abs=1e-9)


@pytest.mark.parametrize("hyp,ref,expected", [
    ("the cat sat", "the cat sat", 1.0),
    ("x y z", "the cat sat", 0.0),
    ("b a", "a b", 0.5),  # LCS of one word: P = R = 1/2
    ("the the cat", "the cat", 1.0),  # distinct words: the repeated 'the' costs no precision
    ("a b. c d", "c d a b", 1.0),  # summary level: each '.'-sentence finds its own LCS
    ("a b a", "a a b", 1.0),  # the package's traceback (ties go left) finds 'a b', not 'a a'
    ("a b c d", "a b", 2 * 0.5 * 1.0 / 1.5),
])
def test_rouge_l_hand_cases(hyp, ref, expected):
    assert M.rouge_l_f(hyp, ref) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("empty", ["", "   ", "\n", ".", " . "])
def test_empty_prediction_scores_zero(empty):
    assert M.rouge_l_f(empty, "the cat sat") == 0.0
    # A whitespace piece after '.' is the empty word in rouge 1.0.1; a blank prediction must not match it.
    assert M.rouge_l_f(empty, "the cat sat. ") == 0.0
    result = M.translation_metrics([empty, "the cat sat on the mat"], ["a dog ran", "the cat sat on the mat"])
    assert result["rouge"] == pytest.approx(50.0, abs=1e-5)
    assert 0.0 < result["bleu4"] < 100.0


def test_empty_csl_prediction_through_evaluate():
    result = M.evaluate(["", "今天星期五。"], ["他四岁。", "今天星期五。"], "CSL_Daily", "SLT")
    assert result["rouge"] == pytest.approx(50.0, abs=1e-5)


@pytest.mark.parametrize("fn", [M.translation_metrics, M.wer_metrics, M.islr_metrics])
def test_length_mismatch_raises(fn):
    with pytest.raises(ValueError, match=r"1 hypotheses but 2 references"):
        fn(["a"], ["a", "b"])


def test_length_mismatch_raises_in_evaluate():
    with pytest.raises(ValueError, match=r"3 hypotheses but 2 references"):
        M.evaluate(["a", "b", "c"], ["a", "b"], "How2Sign", "SLT")


def test_csl_formatting_by_hand():
    preds = M.format_for_dataset(["今天 星期五，好吗？\n", "  "], "CSL_Daily", is_reference=False)
    assert preds == ["今 天 星 期 五 ， 好 吗 ？", ""]
    refs = M.format_for_dataset(["今天 星期五，好吗？"], "CSL_News", is_reference=True)
    assert refs == ["今 天 星 期 五 , 好 吗 ?"]
    assert M.format_for_dataset(["Hello there ,  friend"], "How2Sign", is_reference=True) == ["Hello there ,  friend"]
    assert M.format_for_dataset(["a b"], "Demo", is_reference=False) == ["a b"]


def test_reference_files_are_already_formatted():
    hyps, refs = load_pair("csl_daily", "dev")
    assert M.format_for_dataset(hyps, "CSL_Daily", is_reference=False) == hyps
    assert M.format_for_dataset(refs, "CSL_Daily", is_reference=True) == refs


@pytest.mark.parametrize("hyp,ref,expected", [
    ("a x c d", "a b c d", {"wer": 25.0, "sub": 25.0, "ins": 0.0, "del": 0.0}),
    ("a b c d e", "a b c d", {"wer": 25.0, "sub": 0.0, "ins": 25.0, "del": 0.0}),
    ("a c d", "a b c d", {"wer": 25.0, "sub": 0.0, "ins": 0.0, "del": 25.0}),
    ("", "a b", {"wer": 100.0, "sub": 0.0, "ins": 0.0, "del": 100.0}),
    ("x a b c d y", "a b c d", {"wer": 50.0, "sub": 0.0, "ins": 50.0, "del": 0.0}),
    ("b c e", "a b c d", {"wer": 50.0, "sub": 25.0, "ins": 0.0, "del": 25.0}),
])
def test_wer_hand_cases(hyp, ref, expected):
    result = M.wer_metrics([hyp], [ref])
    assert result == pytest.approx(expected)


def test_wer_is_corpus_level():
    # 6 reference words, 1 substitution + 1 insertion -> 2/6.
    result = M.wer_metrics(["A X C D", "E F G"], ["A B C D", "E F"])
    assert result == pytest.approx({"wer": 100 / 3, "sub": 100 / 6, "ins": 100 / 6, "del": 0.0})


def test_cslr_evaluate_keeps_glosses_whole():
    result = M.evaluate(["今天 星期五"], ["今天 星期四"], "CSL_Daily", "CSLR")
    assert result["wer"] == pytest.approx(50.0)


def test_islr_hand_case():
    hyps = ["cat", "cat", "dog", "bird"]
    refs = ["cat", "cat", "cat", "dog"]
    result = M.islr_metrics(hyps, refs)
    assert result["top1_per_instance"] == pytest.approx(50.0)
    assert result["top1_per_class"] == pytest.approx(100 * (2 / 3 + 0) / 2)
    assert M.evaluate(hyps, refs, "WLASL", "ISLR") == result


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="unknown task"):
        M.evaluate(["a"], ["a"], "WLASL", "POSE")


def test_read_reference_file_rejects_bad_lines(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("sample: A, prediction: hello\nnot a sample line\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt:2"):
        M.read_reference_file(str(path))


def run_cli(*args):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "SLRT_metrics.py"), *args],
                          capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(proc.stdout)


def test_cli_plain_lines_csl(tmp_path):
    hyps = ["今天星期五。", "", "他 四 岁。"]
    refs = ["今天星期五。", "她今年五十岁。", "他四岁？"]
    (tmp_path / "h.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (tmp_path / "r.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    result = run_cli("--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r.txt"), "--dataset", "CSL_Daily")
    assert set(result) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge", "signature"}
    expected = M.evaluate(hyps, refs, "CSL_Daily", "SLT")
    for key in ("bleu1", "bleu4", "rouge"):
        assert result[key] == pytest.approx(expected[key])
    assert result["rouge"] > 0 and "tok:13a" in result["signature"]


def test_cli_reads_sample_files():
    base = os.path.join(REFERENCE_DIR, "csl_daily", "test_tmp_")
    result = run_cli("--hyp", base + "pres.txt", "--ref", base + "refs.txt", "--dataset", "CSL_Daily")
    assert round(result["bleu4"], 4) == 25.6986 and round(result["rouge"], 4) == 55.0035


def test_cli_cslr_task(tmp_path):
    (tmp_path / "h.txt").write_text("a x c d\n", encoding="utf-8")
    (tmp_path / "r.txt").write_text("a b c d\n", encoding="utf-8")
    result = run_cli("--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r.txt"), "--task", "CSLR")
    assert result == pytest.approx({"wer": 25.0, "sub": 25.0, "ins": 0.0, "del": 0.0})

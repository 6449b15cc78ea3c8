"""Tests for SLRT_metrics' paired bootstrap: the function on the released reference outputs, and the command's
output and `error:` lines."""
import json
import os
import sys

import numpy as np
import pytest

import SLRT_metrics as M
from e2e import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = os.path.join(REPO, "tests", "data", "reference_outputs", "csl_daily", "test_tmp_")
PRES, REFS = BASE + "pres.txt", BASE + "refs.txt"


@pytest.fixture(scope="module")
def released():
    """Uni-Sign's released CSL-Daily test predictions and references: the first 300 pairs (quick to score)."""
    return M.read_sentences(PRES)[:300], M.read_sentences(REFS)[:300]


def test_identity_resample_equals_translation_metrics(released):
    hyps, refs = released
    hyps = hyps[:-2] + ["", "他"]  # an empty and a one-character prediction: smoothing and brevity penalty
    stats = M.bleu_sentence_stats(hyps, refs)
    assert M.bleu4_from_stats(stats.sum(0)) == M.translation_metrics(hyps, refs)["bleu4"]
    index = np.arange(0, len(refs), 3)  # a resample is the corpus score of the drawn sentences
    subset = M.translation_metrics([hyps[i] for i in index], [refs[i] for i in index])["bleu4"]
    assert M.bleu4_from_stats(stats[index].sum(0)) == pytest.approx(subset, abs=1e-12)


def test_identical_systems_differ_by_nothing(released):
    hyps, refs = released
    result = M.paired_bootstrap(hyps, list(hyps), refs, resamples=200)
    expected = M.translation_metrics(hyps, refs)
    for metric in ("bleu4", "rouge"):
        assert result["baseline"][metric] == result["system"][metric] == pytest.approx(expected[metric], abs=1e-9)
        assert result[metric] == {"difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}


def test_clearly_better_system_has_small_p_value(released):
    hyps, refs = released
    better = [ref if k % 2 else hyp for k, (hyp, ref) in enumerate(zip(hyps, refs))]  # half the sentences right
    result = M.paired_bootstrap(hyps, better, refs, resamples=300, seed=1)
    for metric in ("bleu4", "rouge"):
        summary = result[metric]
        assert summary["difference"] == pytest.approx(result["system"][metric] - result["baseline"][metric])
        assert 0 < summary["ci95"][0] <= summary["difference"] <= summary["ci95"][1]
        assert summary["p_value"] == 1 / 301  # no centred resample reaches the observed difference
    reverse = M.paired_bootstrap(better, hyps, refs, resamples=300, seed=1)
    assert reverse["bleu4"]["difference"] == -result["bleu4"]["difference"]
    assert reverse["bleu4"]["ci95"] == pytest.approx([-v for v in result["bleu4"]["ci95"][::-1]])


def test_seeded_and_close_systems_not_significant(released):
    hyps, refs = released
    close = list(hyps)
    close[0] = refs[0]  # one sentence of 300 fixed: a real but tiny difference
    first, again = (M.paired_bootstrap(hyps, close, refs, resamples=200, seed=7) for _ in range(2))
    assert first == again
    assert first["bleu4"]["difference"] > 0 and first["bleu4"]["p_value"] > 0.2
    other = M.paired_bootstrap(hyps, close, refs, resamples=200, seed=8)
    assert other["bleu4"]["ci95"] != first["bleu4"]["ci95"]


def test_formats_for_the_dataset_like_evaluate():
    refs = ["今天星期五。", "他四岁。"]
    hyps, better = ["今天 星期五。", "他四岁"], list(refs)
    result = M.paired_bootstrap(hyps, better, refs, dataset="CSL_Daily", resamples=20)
    assert result["baseline"]["bleu4"] == pytest.approx(M.evaluate(hyps, refs, "CSL_Daily", "SLT")["bleu4"])
    assert result["system"]["bleu4"] == pytest.approx(100.0)


def cli(*args):
    """The command in a fresh interpreter: it imports no torch, so that is quicker than the fork server."""
    return run([sys.executable, "SLRT_metrics.py", *map(str, args)], timeout=120, fresh=True)


def test_cli_compares_two_prediction_files(tmp_path):
    hyps, refs = M.read_reference_file(PRES)[1][:50], M.read_reference_file(REFS)
    better = tmp_path / "better.txt"  # plain lines against `sample: ...` references
    better.write_text("\n".join(refs[1][:40] + hyps[40:]) + "\n", encoding="utf-8")
    (tmp_path / "refs.txt").write_text("".join(f"sample: {n}, ground-truth: {t}\n" for n, t in
                                               zip(refs[0][:50], refs[1][:50])), encoding="utf-8")
    (tmp_path / "pres.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    result = cli("--hyp", better, "--baseline", tmp_path / "pres.txt", "--ref", tmp_path / "refs.txt",
                 "--resamples", 100, "--seed", 3)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got == json.loads(json.dumps(M.paired_bootstrap(hyps, refs[1][:40] + hyps[40:], refs[1][:50],
                                                           resamples=100, seed=3)))
    assert got["bleu4"]["p_value"] < 0.05 and got["resamples"] == 100


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("case,flag,expected", [
    ("shorter", "--baseline", "has 2 lines but --ref"),
    ("empty", "--hyp", "is empty"),
    ("missing", "--baseline", "cannot read it"),
    ("latin1", "--hyp", "is not UTF-8"),
    ("renamed", "--baseline", "line 2 is sample 'X'"),
    ("folder", "--ref", "cannot read it"),
])
def test_cli_bad_input_is_one_error_line(tmp_path, case, flag, expected):
    refs = write(tmp_path / "refs.txt", [f"sample: {n}, ground-truth: a b c" for n in "ABC"])
    files = {"--hyp": write(tmp_path / "hyp.txt", ["a b", "a", "c"]),
             "--baseline": write(tmp_path / "base.txt", ["a", "b", "c"])}
    bad = tmp_path / f"{case}.txt"
    if case == "shorter":
        write(bad, ["a", "b"])
    elif case == "empty":
        bad.write_text("", encoding="utf-8")
    elif case == "latin1":
        bad.write_bytes("a\nb\ncaf\u00e9\n".encode("latin-1"))
    elif case == "renamed":
        write(bad, [f"sample: {n}, prediction: a" for n in "AXC"])
    elif case == "folder":
        bad.mkdir()
    files[flag] = bad
    result = cli("--hyp", files["--hyp"], "--baseline", files["--baseline"], "--ref", files.get("--ref", refs))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {flag} ")
    assert str(bad) in result.stderr and expected in result.stderr


def test_cli_baseline_needs_slt(tmp_path):
    path = write(tmp_path / "a.txt", ["a"])
    result = cli("--hyp", path, "--baseline", path, "--ref", path, "--task", "CSLR")
    assert result.returncode == 1 and result.stderr.startswith("error: --baseline") and "--task SLT" in result.stderr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holm_adjusts_as_its_step_down_rule_says(seed):
    """Holm's adjusted p-values: sorted p_(j) times (m - j + 1), made monotone and capped at 1, in the input order;
    never below the raw p, never above Bonferroni's m p, and the smallest is exactly Bonferroni's."""
    p = np.random.default_rng(seed).uniform(0, 0.2, size=7).tolist()
    adjusted = M.holm(p)
    m, order = len(p), np.argsort(p)
    expected, running = {}, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        expected[i] = running
    assert adjusted == [expected[i] for i in range(m)]
    assert all(a >= q and a <= min(1.0, m * q) for a, q in zip(adjusted, p))
    assert adjusted[order[0]] == min(1.0, m * p[order[0]])
    assert M.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # worked by hand

"""Tests for script/ablate_hyperbolic.py: a --quick ablation end to end (its tables against the runs' logs and
predictions), the best-checkpoint evaluation, the configuration set and the `error:` lines."""
import json
import os
import statistics
import sys
from pathlib import Path

import pytest

import ablate_hyperbolic as A
import SLRT_metrics
import utils
from e2e import run

# Explicit, so that the test runs what exists on every branch: the *_stable and single-remedy configurations
# need issue 25's flags in fine_tuning.py.
TEST_CONFIGS = ["pose", "token_released"]


def forked(cmd, log_path):
    """ablate_hyperbolic's runner, through the tests' fork server (no 8 s of imports a run)."""
    result = run(cmd)
    Path(log_path).write_text(result.stdout + result.stderr, encoding="utf-8")
    return result.returncode


def demo_flags(demo):
    return ["--mt5_path", demo["mt5_path"], "--pose_dir", demo["pose_dir"],
            *(part for phase in ("train", "dev", "test")
              for part in (f"--{phase}_label_path", demo["label_paths"][phase]))]


@pytest.fixture(scope="module")
def quick_ablation(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    A.main(["--quick", "--seeds", "2", "--epochs", "1", "--configs", *TEST_CONFIGS, "--out", str(out),
            "--resamples", "200", *demo_flags(demo_root)], run=forked)
    return out, json.loads((out / "ablation.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_quick_ablation_tables_match_the_runs(quick_ablation):
    out, table = quick_ablation
    assert list(table["configs"]) == TEST_CONFIGS and table["seeds"] == [A.FIRST_SEED, A.FIRST_SEED + 1]
    for name, row in table["configs"].items():
        assert [r["seed"] for r in row["runs"]] == table["seeds"]
        for r in row["runs"]:
            records = utils.read_log(r["dir"])
            best = A.best_record(records)
            assert len(records) == 1 and r["best_epoch"] == best["epoch"]
            assert {k: r[k] for k in A.SCORES} == {k: best[k] for k in A.SCORES}
            hyps, refs = (SLRT_metrics.read_sentences(r[f"test_{kind}"]) for kind in ("predictions", "references"))
            assert len(refs) == A.QUICK_SAMPLES  # the cut test split
            assert SLRT_metrics.translation_metrics(hyps, refs)["bleu4"] == pytest.approx(best["test_bleu4"], abs=1e-9)
            assert r["hyp"] == {k[len("train_"):]: v for k, v in records[-1].items() if k.startswith("train_hyp_")}
            assert ("plot" in r) == (name != "pose") and (name == "pose" or os.path.isfile(r["plot"]))
        for key in A.SCORES:
            values = [r[key] for r in row["runs"]]
            assert row[key] == pytest.approx(statistics.fmean(values))
            assert row[key + "_sd"] == pytest.approx(statistics.stdev(values))
        health = [r["hyp"].get("hyp_at_limit") for r in row["runs"]]
        assert row["hyp_at_limit"] == (None if None in health else pytest.approx(statistics.fmean(health)))
    pose, token = table["configs"]["pose"], table["configs"]["token_released"]
    assert token["vs_reference"] is None and pose["reference"] == "token_released"
    pooled = [A.pooled_test_texts(row["runs"]) for row in (token, pose)]
    expected = SLRT_metrics.paired_bootstrap(pooled[0][1], pooled[1][1], pooled[0][2], resamples=200)
    assert pose["vs_reference"]["bleu4"] == expected["bleu4"]
    assert pose["vs_reference"]["samples"] == 2 * A.QUICK_SAMPLES  # both seeds' test sentences
    lines = (out / "ablation.md").read_text(encoding="utf-8").splitlines()
    pose_line = next(line for line in lines if line.startswith("| pose |"))
    assert A.number(pose["test_bleu4"], pose["test_bleu4_sd"]) in pose_line
    assert f"| token_released | {expected['bleu4']['difference']:+.2f} [" in pose_line  # vs and Δ cells
    assert any(line.startswith(f"| token_released | {A.number(token['dev_bleu4'], token['dev_bleu4_sd'])} |")
               for line in lines)


def fake_fine_tuning(calls, dev_bleu4):
    """A runner that records each command and, for a training, writes the log of epochs with these dev BLEU-4
    and prediction files; for --eval, prediction files only."""
    def fake(cmd, log_path):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--output_dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        utils.write_predictions(str(out), "test", ["A"], ["a b" if "--eval" in cmd else "x"], ["a b"])
        if "--eval" not in cmd:
            best = None
            for epoch, score in enumerate(dev_bleu4):
                best = score if best is None or score > best else best
                utils.append_log(str(out), {"epoch": epoch, "dev_bleu4": score, "dev_rouge": 1.0, "test_bleu4": epoch,
                                            "test_rouge": 2.0, "best_dev_bleu4": best})
        Path(log_path).write_text("", encoding="utf-8")
        return 0
    return fake


@pytest.mark.parametrize("dev_bleu4,best_epoch", [([1.0, 3.0, 3.0], 1), ([1.0, 2.0], 1)])
def test_test_predictions_come_from_the_best_checkpoint(tmp_path, dev_bleu4, best_epoch):
    args = A.get_args_parser().parse_args(["--out", str(tmp_path), "--configs", "pose", "--mt5_path", str(tmp_path)])
    A.check_args(args)
    calls = []
    result = A.train_and_score(args, "pose", 42, fake_fine_tuning(calls, dev_bleu4))
    assert result["best_epoch"] == best_epoch and result["test_bleu4"] == best_epoch
    last_is_best = best_epoch == len(dev_bleu4) - 1
    assert len(calls) == (1 if last_is_best else 2) and "--use_hyperbolic" not in calls[0]
    if not last_is_best:
        assert calls[1][-1] == "--eval"
        assert calls[1][calls[1].index("--finetune") + 1] == str(tmp_path / "pose" / "seed42" / "best_checkpoint.pth")
        assert result["test_predictions"] == str(tmp_path / "pose" / "seed42" / "best_eval" / "test_tmp_pres.txt")
    assert SLRT_metrics.read_sentences(result["test_predictions"]) == (["x"] if last_is_best else ["a b"])


def test_configurations_bring_their_reference():
    assert A.chosen_configs(["default"]) == list(A.DEFAULT_CONFIGS)
    assert A.chosen_configs(["token_clip"]) == ["token_released", "token_clip"]
    assert A.chosen_configs(["pose", "pooled_gyro"]) == ["pose", "token_released", "pooled_released", "pooled_gyro"]
    assert {A.reference_of(n) for n in A.CONFIGS} == {None, "token_released", "pooled_released"}
    assert all(A.reference_of(n) is None for n in A.CONFIGS if n.endswith("_released"))


@pytest.mark.parametrize("flags,expected", [
    (["--configs", "token_magic"], "--configs: unknown configuration 'token_magic'"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--dataset", "How2Sign"], "--dataset How2Sign: the ablation has recipes for Demo and CSL_Daily"),
    (["--mt5_path", "/nonexistent/mt5"], "--mt5_path /nonexistent/mt5 does not exist"),
])
def test_bad_flags_are_one_error_line(tmp_path, capsys, flags, expected):
    with pytest.raises(SystemExit) as stop:
        A.main(["--out", str(tmp_path / "out"), *flags], run=lambda cmd, log: pytest.fail("nothing may run"))
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.startswith(f"error: {expected}") and err.count("\n") == 1
    assert not (tmp_path / "out" / "ablation.md").exists()

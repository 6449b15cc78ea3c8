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

# The two configurations every ablation has (pose-only and the released branch): quick enough for a test.
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


@pytest.mark.slow
def test_quick_ablation_end_to_end(demo_root, tmp_path):
    """The real commands (one seed: the table's arithmetic over seeds is test_tables_over_seeds'): fine_tuning.py
    accepts every flag, the table holds the logs' best-dev scores, the test predictions score as logged, the
    hyperbolic run has its plot and the pose row its bootstrap against token_released."""
    A.main(["--quick", "--seeds", "1", "--epochs", "1", "--configs", *TEST_CONFIGS, "--out", str(tmp_path),
            "--resamples", "100", *demo_flags(demo_root)], run=forked)
    table = json.loads((tmp_path / "ablation.json").read_text(encoding="utf-8"))
    assert list(table["configs"]) == TEST_CONFIGS and table["seeds"] == [A.FIRST_SEED]
    for name, row in table["configs"].items():
        (r,) = row["runs"]
        records = utils.read_log(r["dir"])
        assert {k: r[k] for k in A.SCORES} == {k: records[0][k] for k in A.SCORES}
        assert {k: row[k] for k in A.SCORES} == {k: records[0][k] for k in A.SCORES}
        hyps, refs = (SLRT_metrics.read_sentences(r[f"test_{kind}"]) for kind in ("predictions", "references"))
        assert len(refs) == A.QUICK_SAMPLES  # the cut test split
        assert SLRT_metrics.translation_metrics(hyps, refs)["bleu4"] == pytest.approx(r["test_bleu4"], abs=1e-9)
        assert r["hyp"] == {k[len("train_"):]: v for k, v in records[-1].items() if k.startswith("train_hyp_")}
        assert ("plot" in r) == (name != "pose") and (name == "pose" or os.path.isfile(r["plot"]))
    pose = table["configs"]["pose"]
    assert pose["reference"] == "token_released" and pose["vs_reference"]["samples"] == A.QUICK_SAMPLES
    markdown = (tmp_path / "ablation.md").read_text(encoding="utf-8")
    assert f"| pose | {A.number(pose['dev_bleu4'])} |" in markdown and "\n| token_released | " in markdown


TEXTS = {"refs": ["a b c d e", "f g h i j"], "token": ["a b c d e", "f g h i x"], "pose": ["a b c x y", "f g"]}


def fake_runner(calls, dev_bleu4):
    """A stand-in for the commands: records each one; a training writes the log of epochs with these dev BLEU-4
    (plus the seed) and last-epoch predictions 'z'; an --eval writes the configuration's TEXTS; a plot a file."""
    def fake(cmd, log_path):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--output_dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text("", encoding="utf-8")
        if cmd[1].endswith("plot_embeddings.py"):
            (out / "poincare_disk.png").write_bytes(b"")
            return 0
        seed, hyperbolic = int(cmd[cmd.index("--seed") + 1]), "--use_hyperbolic" in cmd
        hyps = TEXTS["token" if hyperbolic else "pose"] if "--eval" in cmd else ["z", "z"]
        utils.write_predictions(str(out), "test", [f"S{seed}", "T"], hyps, TEXTS["refs"])
        best = None
        for epoch, score in enumerate(dev_bleu4 if "--eval" not in cmd else ()):
            best = score + seed if best is None or score + seed > best else best
            health = {"train_hyp_at_limit": seed / 100, "train_hyp_w_entropy": 1.0} if hyperbolic else {}
            utils.append_log(str(out), {"epoch": epoch, **health, "dev_bleu4": score + seed, "dev_rouge": 1.0,
                                        "test_bleu4": 10.0 * epoch + seed, "test_rouge": 2.0, "best_dev_bleu4": best})
        return 0
    return fake


def test_tables_over_seeds(tmp_path):
    calls = []
    A.main(["--out", str(tmp_path), "--configs", "pose", "--epochs", "3", "--resamples", "50", "--mt5_path",
            str(tmp_path)], run=fake_runner(calls, dev_bleu4=[1.0, 3.0, 2.0]))
    table = json.loads((tmp_path / "ablation.json").read_text(encoding="utf-8"))
    assert list(table["configs"]) == TEST_CONFIGS  # pose brings its reference
    # per run: training, --eval of the best checkpoint (epoch 1 of 0-2), and for the hyperbolic runs a plot
    assert len(calls) == 2 * 2 + 2 * 3
    for name, row in table["configs"].items():
        assert [r["best_epoch"] for r in row["runs"]] == [1, 1]
        assert row["test_bleu4"] == 10.0 + A.FIRST_SEED + 0.5 and row["test_bleu4_sd"] == pytest.approx(0.5 ** 0.5)
        assert row["hyp_at_limit"] == (None if name == "pose" else pytest.approx((2 * A.FIRST_SEED + 1) / 200))
    pose = table["configs"]["pose"]
    # the seeds pooled: both systems' sentences of seed 42 then seed 43, compared pairwise
    expected = SLRT_metrics.paired_bootstrap(TEXTS["token"] * 2, TEXTS["pose"] * 2, TEXTS["refs"] * 2, resamples=50)
    compared = dict(pose["vs_reference"]["bleu4"])
    p_holm = compared.pop("p_holm")  # the table's p-values corrected together (SLRT_metrics.holm)
    assert compared == expected["bleu4"] and compared["difference"] < 0
    assert compared["p_value"] <= p_holm <= 1
    lines = (tmp_path / "ablation.md").read_text(encoding="utf-8").splitlines()
    pose_line = next(line for line in lines if line.startswith("| pose |"))
    delta = expected["bleu4"]
    assert (f"| {A.number(pose['test_bleu4'], pose['test_bleu4_sd'])} |" in pose_line
            and f"| token_released | {delta['difference']:+.2f} [{delta['ci95'][0]:+.2f}, {delta['ci95'][1]:+.2f}] | "
                f"{delta['p_value']:.3f} |" in pose_line)
    token_line = next(line for line in lines if line.startswith("| token_released |"))
    assert token_line.endswith("| 0.425 | 1.000 | - | - | - | - |")


@pytest.mark.parametrize("dev_bleu4,best_epoch", [([1.0, 3.0, 3.0], 1), ([1.0, 2.0], 1)])
def test_test_predictions_come_from_the_best_checkpoint(tmp_path, dev_bleu4, best_epoch):
    args = A.get_args_parser().parse_args(["--out", str(tmp_path), "--configs", "pose", "--mt5_path", str(tmp_path)])
    A.check_args(args)
    calls = []
    result = A.train_and_score(args, "pose", 42, fake_runner(calls, dev_bleu4))
    assert result["best_epoch"] == best_epoch and result["test_bleu4"] == 10.0 * best_epoch + 42
    last_is_best = best_epoch == len(dev_bleu4) - 1
    assert len(calls) == (1 if last_is_best else 2) and "--use_hyperbolic" not in calls[0]
    if not last_is_best:
        assert calls[1][-1] == "--eval"
        assert calls[1][calls[1].index("--finetune") + 1] == str(tmp_path / "pose" / "seed42" / "best_checkpoint.pth")
        assert result["test_predictions"] == str(tmp_path / "pose" / "seed42" / "best_eval" / "test_tmp_pres.txt")
    assert SLRT_metrics.read_sentences(result["test_predictions"]) == (["z", "z"] if last_is_best else TEXTS["pose"])


def test_configurations_bring_their_reference():
    assert A.chosen_configs(["default"]) == list(A.DEFAULT_CONFIGS)
    assert A.chosen_configs(["token_clip"]) == ["token_released", "token_clip"]
    assert A.chosen_configs(["pose", "pooled_gyro"]) == ["pose", "token_released", "pooled_released", "pooled_gyro"]
    assert {A.reference_of(n) for n in A.CONFIGS} == {None, "token_released", "pooled_released", "token_stable",
                                                      "pooled_stable"}
    geometry = A.chosen_configs(["geometry"])  # each control beside the same recipe on the ball, and pose
    assert {"pose", "token_stable", "token_lorentz", "token_euclidean", "token_sphere", "pooled_stable",
            "pooled_lorentz", "token_released", "pooled_released"} <= set(geometry)
    assert A.reference_of("token_sphere") == "token_stable" and A.reference_of("pooled_lorentz") == "pooled_stable"
    assert all(A.reference_of(n) is None for n in A.CONFIGS if n.endswith("_released"))


def test_every_configuration_builds_the_model_its_name_says():
    import fine_tuning
    from models import STABLE_RECIPE, ModelConfig

    def config(name):
        return ModelConfig.from_args(fine_tuning.get_args_parser().parse_args(A.CONFIGS[name]))

    token_recipe = {**STABLE_RECIPE, "hyp_midpoint": "frechet"}  # token mode takes no midpoint
    stable = {k: getattr(config("token_stable"), k) for k in STABLE_RECIPE}
    assert stable == token_recipe
    # stable before the part-weighted pairs: the recipe with an explicit flag, which wins
    uniform = {k: getattr(config("token_stable_uniform"), k) for k in STABLE_RECIPE}
    assert uniform == {**token_recipe, "hyp_pair_weights": "uniform"}
    assert config("pooled_stable").hyp_midpoint == "gyro"
    assert config("token_stable_soft").hyp_clip == "soft" and config("pose").use_hyperbolic is False
    for name in A.CONFIGS:
        assert config(name).hyp_text_cmp == ("pooled" if name.startswith("pooled") else "token")
        assert config(name).ineffective() is None, name
    assert config("token_lorentz").hyp_geometry == "lorentz" and config("token_lorentz").hyp_clip_r == 2.0


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


def test_csl_daily_prints_the_papers_numbers(tmp_path, capsys):
    A.main(["--dataset", "CSL_Daily", "--out", str(tmp_path), "--configs", "pose", "--seeds", "1", "--epochs", "1",
            "--resamples", "20", "--mt5_path", str(tmp_path)], run=fake_runner([], dev_bleu4=[1.0]))
    printed = capsys.readouterr().out
    rows = {line.split(" | ")[0]: line for line in printed.splitlines() if line.startswith("| ")}
    assert rows["| config"].endswith("| paper test BLEU-4 / ROUGE-L |")
    assert rows["| pose"].endswith("| 25.61 / 54.92 |") and rows["| token_released"].endswith("| 27.42 / 57.95 |")


def test_a_failed_run_is_one_error_line(tmp_path, capsys):
    def failing(cmd, log_path):
        Path(log_path).write_text("usage: ...\nfine_tuning.py: error: unrecognized arguments: --hyp_recipe stable\n",
                                  encoding="utf-8")
        return 2
    with pytest.raises(SystemExit):
        A.main(["--out", str(tmp_path), "--configs", "token_stable", "--mt5_path", str(tmp_path)], run=failing)
    err = capsys.readouterr().err
    # token_stable brings its reference, which runs first
    assert err.count("\n") == 1 and err.startswith("error: token_released seed 42: fine_tuning.py failed (exit 2): ")
    assert "fine_tuning.py: error: unrecognized arguments: --hyp_recipe stable" in err  # the run's own error line
    assert str(tmp_path / "token_released" / "seed42" / "stdout.txt") in err
    assert not (tmp_path / "ablation.json").exists()


def test_reuse_trains_only_what_is_new_or_changed(tmp_path, monkeypatch):
    """--reuse keeps a finished run of the same command and the same stable recipe; a new configuration, or a
    changed meaning of --hyp_recipe stable, trains again."""
    def trainings(calls):
        return sorted((c[c.index("--output_dir") + 1], c.count("--hyp_recipe")) for c in calls
                      if c[1] == "fine_tuning.py" and "--eval" not in c)
    flags = ["--out", str(tmp_path), "--epochs", "3", "--resamples", "20", "--mt5_path", str(tmp_path), "--seeds", "1"]
    first = []
    A.main(flags + ["--configs", "pose"], run=fake_runner(first, dev_bleu4=[1.0, 3.0, 2.0]))
    assert len(trainings(first)) == 2  # pose and its reference, token_released
    again = []
    A.main(flags + ["--configs", "pose", "token_stable", "--reuse"], run=fake_runner(again, dev_bleu4=[1.0, 3.0, 2.0]))
    assert trainings(again) == [(str(tmp_path / "token_stable" / "seed42"), 1)]
    reused = str(tmp_path / "token_released" / "seed42")  # its best checkpoint's scores and plot are kept too
    assert not [c for c in again if any(part.startswith(reused) for part in c)]
    monkeypatch.setitem(A.STABLE_RECIPE, "hyp_clip_r", 9.0)
    changed = []
    A.main(flags + ["--configs", "token_stable", "--reuse"], run=fake_runner(changed, dev_bleu4=[1.0, 3.0, 2.0]))
    assert trainings(changed) == [(str(tmp_path / "token_stable" / "seed42"), 1)]

"""script/part_importance.py: a part removed the two ways (missing before normalisation, zeroed features), the
rank agreement of weights and drops, and a whole run on the token_run fixture's model."""
import json
import sys

import numpy as np
import pytest
import torch

import part_importance as pi  # script/ (pyproject.toml's pytest pythonpath)
from e2e import check_ok, run


@pytest.fixture(scope="module")
def demo_test_set(tiny_demo):
    from datasets import build_dataset
    return build_dataset("Demo", "test", {"task": "SLT"}, label_path=tiny_demo["label_paths"]["test"],
                         pose_dir=tiny_demo["pose_dir"])


@pytest.mark.parametrize("part", ["left", "right", "face_all"])
def test_a_missing_part_is_undetected_and_the_others_unchanged(demo_test_set, part):
    for index in range(2):
        whole, occluded = demo_test_set[index]["pose"], pi.missing_part_dataset(demo_test_set, part)[index]["pose"]
        assert whole[part].abs().sum() > 0  # the demo signer has every part
        assert torch.equal(occluded[part], torch.zeros_like(occluded[part]))  # as normalise_pose leaves a missing part
        for other in whole:
            if other != part:
                assert torch.equal(occluded[other], whole[other])


def test_a_missing_body_leaves_no_frame_of_reference(demo_test_set):
    occluded = pi.missing_part_dataset(demo_test_set, "body")[0]["pose"]
    assert all(torch.equal(values, torch.zeros_like(values)) for values in occluded.values())


def test_zeroed_features_zero_one_part_and_restore_the_encoder():
    import models
    original = models.encode_parts
    fake = {p: torch.ones(2, 3, 4) for p in pi.PART_INDICES}
    models.encode_parts = lambda *args: dict(fake)
    try:
        with pi.zeroed_features("right"):
            features = models.encode_parts()
        assert features["right"].abs().sum() == 0 and all(features[p].sum() == 24 for p in ("body", "left", "face_all"))
        assert models.encode_parts().get("right").sum() == 24  # restored after the block
    finally:
        models.encode_parts = original


def test_weight_agreement_is_spearman_per_sample_and_of_the_means():
    from scipy.stats import spearmanr
    rng = np.random.default_rng(0)
    weights, drops = rng.random((20, 4)), rng.normal(size=(20, 4))
    drops[3] = 1.0  # a sample whose drops rank nothing: left out
    agreement = pi.weight_agreement(weights, drops)
    expected = [spearmanr(w, d).statistic for k, (w, d) in enumerate(zip(weights, drops)) if k != 3]
    assert agreement["samples_ranked"] == 19
    assert agreement["per_sample_mean"] == pytest.approx(np.mean(expected))
    assert agreement["of_means"] == pytest.approx(spearmanr(weights.mean(0), drops.mean(0)).statistic)
    assert pi.weight_agreement(weights, drops * 0)["per_sample_mean"] is None
    saturated = 0.25 + 1e-7 * rng.random((20, 4))  # uniform weights up to float32 noise rank nothing
    assert pi.weight_agreement(saturated, drops) == {"per_sample_mean": None, "samples_ranked": 0, "of_means": None}


@pytest.mark.slow
def test_part_importance_on_a_trained_model(token_run, tiny_demo, tmp_path):
    """On the last epoch's model, the split 'as it is' is translated exactly as the run's evaluation did; every
    part has both drops with an interval, the drops are the score differences, and the weights are kept."""
    out = tmp_path / "parts"
    result = check_ok(run([sys.executable, "script/part_importance.py", "--finetune", str(token_run / "checkpoint.pth"),
                           "--dataset", "Demo", "--split", "test", "--label_path", tiny_demo["label_paths"]["test"],
                           "--pose_dir", tiny_demo["pose_dir"], "--output_dir", str(out), "--batch_size", "4",
                           "--num_beams", "2", "--max_tgt_len", "20", "--resamples", "200"]))
    assert "missing right hand bleu4" in result.stdout
    with open(out / "part_importance.json", encoding="utf-8") as f:
        found = json.load(f)
    from SLRT_metrics import format_for_dataset, read_reference_file, translation_metrics
    names, predicted = read_reference_file(str(token_run / "test_tmp_pres.txt"))
    assert found["names"] == names and format_for_dataset(found["predictions"], "Demo", False) == predicted
    full = translation_metrics(predicted, format_for_dataset(found["references"], "Demo", True))
    for how in pi.MEASURES:
        for part in pi.PART_INDICES:
            row = found["drops"][how][part]
            for metric in pi.METRICS:
                assert row[metric]["drop"] == pytest.approx(full[metric] - row["scores"][metric], abs=1e-9)
                assert row[metric]["ci95"][0] <= row[metric]["ci95"][1]
            assert len(row["per_sample"]["bleu"]) == found["samples"] == 6
    weights = np.array(found["part_weights"]["per_sample"])
    assert weights.shape == (6, 4) and np.allclose(weights.sum(1), 1, atol=1e-5)
    assert set(found["weight_agreement"]) == set(pi.MEASURES)
    assert (out / "part_importance.png").stat().st_size > 10_000

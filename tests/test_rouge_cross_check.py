"""Our ROUGE-L (the `rouge` 1.0.1 protocol of the literature, SLRT_metrics.rouge_l_f) against Google's rouge-score,
an independent implementation: on sentences whose words are distinct and need no tokenising the two protocols
define the same F score (one LCS, P = LCS / |hyp|, R = LCS / |ref|), so they must agree to rouge 1.0.1's 1e-8 in
the denominator; where words repeat, rouge 1.0.1 counts distinct words and the numbers part (docs/design.md)."""
import random

import pytest
from rouge_score import rouge_scorer

import SLRT_metrics as M


def google_rouge_l(hyp, ref):
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(ref, hyp)["rougeL"].fmeasure


def test_rouge_l_agrees_with_rouge_score_where_the_protocols_coincide():
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(12)]
    for _ in range(500):
        hyp = " ".join(rng.sample(vocabulary, rng.randint(1, 8)))
        ref = " ".join(rng.sample(vocabulary, rng.randint(1, 8)))
        assert M.rouge_l_f(hyp, ref) == pytest.approx(google_rouge_l(hyp, ref), abs=1e-7), (hyp, ref)


def test_repeated_words_are_where_the_literatures_rouge_differs():
    hyp, ref = "a a a b", "a b a b"  # LCS "a a b" (3 words); rouge 1.0.1 counts the distinct words {a, b}
    assert google_rouge_l(hyp, ref) == pytest.approx(0.75)
    assert M.rouge_l_f(hyp, ref) == pytest.approx(1.0, abs=1e-7)

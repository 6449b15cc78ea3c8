"""Sign language translation / recognition metrics, following the literature's protocol.

SLT: cumulative BLEU-1..4 and ROUGE-L F as the `rouge` 1.0.1 package computes it. BLEU has two protocols
(BLEU_PROTOCOLS, picked by the tokenizer's name, every score carrying sacrebleu's signature): "13a" (the
default: sacrebleu's corpus BLEU with its 13a tokeniser and exp smoothing, as GFSLT-VLP and Uni-Sign score)
and "none" (signjoey's, Camgoz et al. 2018/2020: sacrebleu's raw corpus BLEU, no tokenisation, floor
smoothing with value 0, effective order). CSLR: word error rate with substitution / insertion / deletion rates.
ISLR: top-1 per-instance and per-class accuracy. All scores are percentages.
Two systems on the same references: a paired bootstrap of their BLEU-4 and ROUGE-L difference.
CLI: python SLRT_metrics.py --hyp H.txt --ref R.txt [--dataset CSL_Daily] [--task SLT] [--bleu_tokenize 13a|none|both]
     python SLRT_metrics.py --hyp NEW.txt --baseline OLD.txt --ref R.txt [--resamples 1000] [--seed 0]
"""
import argparse
import json
import re
import sys
from collections import defaultdict

import numpy as np
from sacrebleu.metrics import BLEU

import config

# tokenizer name -> sacrebleu BLEU settings. "none" is sacrebleu's raw_corpus_bleu, which signjoey scores with.
BLEU_PROTOCOLS = {
    "13a": {"tokenize": "13a", "smooth_method": "exp"},
    "none": {"tokenize": "none", "smooth_method": "floor", "smooth_value": 0.0, "effective_order": True},
}
DEFAULT_BLEU_TOKENIZE = "13a"
_SAMPLE_LINE = re.compile(r"^sample: (.*?), (?:prediction|ground-truth): ?(.*)$")


def _check_lengths(hyps, refs):
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references: the lists must pair up")
    if not hyps:
        raise ValueError("no samples to score (empty hypothesis and reference lists)")


def format_for_dataset(texts, dataset, is_reference):
    """CSL datasets are scored on characters; other datasets' strings are kept as they are."""
    if dataset not in config.chinese_datasets:
        return list(texts)
    out = []
    for text in texts:
        if is_reference:
            text = text.replace("，", ",").replace("？", "?")
        chars = text.replace(" ", "").replace("\n", "")
        out.append(" ".join(chars))
    return out


def _lcs_words(ref_words, hyp_words):
    """Distinct words of the one LCS that rouge 1.0.1's traceback picks.

    Traceback from the end: equal words -> diagonal; else up when table[i-1][j] > table[i][j-1],
    otherwise left (ties go left, exactly as the package does).
    """
    rows, cols = len(ref_words), len(hyp_words)
    table = [[0] * (cols + 1)]
    for i in range(1, rows + 1):
        prev, row, word = table[-1], [0] * (cols + 1), ref_words[i - 1]
        for j in range(1, cols + 1):
            if word == hyp_words[j - 1]:
                row[j] = prev[j - 1] + 1
            else:
                row[j] = prev[j] if prev[j] > row[j - 1] else row[j - 1]
        table.append(row)
    found, i, j = set(), rows, cols
    while i > 0 and j > 0:
        if ref_words[i - 1] == hyp_words[j - 1]:
            found.add(ref_words[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return found


def _rouge_sentences(text):
    """rouge 1.0.1 split: on '.', drop empty pieces, collapse whitespace; words split on ' '.

    A whitespace-only piece survives as the empty word '' (the package counts it too).
    """
    return [" ".join(piece.split()).split(" ") for piece in text.split(".") if len(piece) > 0]


def rouge_l_f(hyp, ref):
    """Summary-level ROUGE-L F of one pair: union LCS over distinct words, F = 2PR/(P+R+1e-8).

    A hypothesis without words (empty, blank, only '.') or an empty reference scores 0, where the
    package raises or lets a blank piece match the reference's empty word.
    """
    hyp_sents, ref_sents = _rouge_sentences(hyp), _rouge_sentences(ref)
    if not ref_sents or not any(word for words in hyp_sents for word in words):
        return 0.0
    n_hyp = len({w for s in hyp_sents for w in s})
    n_ref = len({w for s in ref_sents for w in s})
    union = set()
    for ref_words in ref_sents:
        for hyp_words in hyp_sents:
            union |= _lcs_words(ref_words, hyp_words)
    recall, precision = len(union) / n_ref, len(union) / n_hyp
    return 2.0 * precision * recall / (precision + recall + 1e-8)


def rouge_l(hyps, refs):
    """Mean per-sample ROUGE-L F x100."""
    _check_lengths(hyps, refs)
    return 100.0 * sum(rouge_l_f(h, r) for h, r in zip(hyps, refs)) / len(hyps)


def _bleu(tokenize):
    if tokenize not in BLEU_PROTOCOLS:
        raise ValueError(f"unknown BLEU tokenizer {tokenize!r}: expected one of {', '.join(BLEU_PROTOCOLS)}")
    return BLEU(max_ngram_order=4, **BLEU_PROTOCOLS[tokenize])


def bleu_signature(tokenize=DEFAULT_BLEU_TOKENIZE):
    """sacrebleu's signature of a BLEU protocol, e.g. nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.x."""
    bleu = _bleu(tokenize)
    bleu.corpus_score(["a"], [["a"]])  # sacrebleu signs a metric once it knows the number of references (1)
    return str(bleu.get_signature())


def translation_metrics(hyps, refs, tokenize=DEFAULT_BLEU_TOKENIZE):
    """bleu1..bleu4 (cumulative, corpus level) of the BLEU protocol `tokenize`, rouge and the BLEU signature."""
    _check_lengths(hyps, refs)
    bleu = _bleu(tokenize)
    stats = bleu.corpus_score(hyps, [refs])
    smoothing = {key: value for key, value in BLEU_PROTOCOLS[tokenize].items() if key != "tokenize"}
    result = {}
    for order in range(1, 5):
        # Order-k n-gram counts do not depend on the maximum order, so one tokenisation pass serves
        # all four (identical to BLEU(max_ngram_order=order); 4x faster).
        score = BLEU.compute_bleu(stats.counts[:order], stats.totals[:order], stats.sys_len, stats.ref_len,
                                  max_ngram_order=order, **smoothing)
        result[f"bleu{order}"] = score.score
    result["rouge"] = rouge_l(hyps, refs)
    result["signature"] = str(bleu.get_signature())
    return result


def _edit_counts(ref, hyp):
    """(substitutions, insertions, deletions) of a minimum-edit alignment of hyp to ref.

    Traceback prefers match/substitution, then deletion, then insertion among equal-cost moves.
    """
    rows, cols = len(ref), len(hyp)
    cost = [[j for j in range(cols + 1)]]
    for i in range(1, rows + 1):
        row = [i] + [0] * cols
        for j in range(1, cols + 1):
            diagonal = cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1])
            row[j] = min(diagonal, cost[i - 1][j] + 1, row[j - 1] + 1)
        cost.append(row)
    sub = ins = dele = 0
    i, j = rows, cols
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            sub += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            dele, i = dele + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return sub, ins, dele


def wer_metrics(hyps, refs):
    """Corpus word error rate and its sub/ins/del parts, as % of reference words."""
    _check_lengths(hyps, refs)
    totals, n_ref_words = [0, 0, 0], 0
    for hyp, ref in zip(hyps, refs):
        ref_words = ref.split()
        n_ref_words += len(ref_words)
        for k, count in enumerate(_edit_counts(ref_words, hyp.split())):
            totals[k] += count
    if n_ref_words == 0:
        raise ValueError("the references contain no words: WER is undefined")
    sub, ins, dele = (100.0 * t / n_ref_words for t in totals)
    return {"wer": sub + ins + dele, "sub": sub, "ins": ins, "del": dele}


def islr_metrics(hyps, refs):
    """Top-1 accuracy per instance and averaged over classes (the reference labels), in %."""
    _check_lengths(hyps, refs)
    hits_per_class, total_per_class = defaultdict(int), defaultdict(int)
    for hyp, ref in zip(hyps, refs):
        label = ref.strip()
        total_per_class[label] += 1
        hits_per_class[label] += hyp.strip() == label
    per_instance = 100.0 * sum(hits_per_class.values()) / len(refs)
    class_accuracies = [hits_per_class[c] / total_per_class[c] for c in total_per_class]
    per_class = 100.0 * sum(class_accuracies) / len(class_accuracies)
    return {"top1_per_instance": per_instance, "top1_per_class": per_class}


def evaluate(hyps, refs, dataset, task, bleu_tokenize=DEFAULT_BLEU_TOKENIZE):
    """Format for the dataset, then score with the task's metrics ('SLT' | 'ISLR' | 'CSLR'); SLT's BLEU with
    the protocol bleu_tokenize ("13a" or "none", see BLEU_PROTOCOLS).

    Only SLT is character-formatted on CSL datasets: CSLR glosses and ISLR words are scored whole.
    """
    _check_lengths(hyps, refs)
    if task == "SLT":
        hyps = format_for_dataset(hyps, dataset, is_reference=False)
        refs = format_for_dataset(refs, dataset, is_reference=True)
        return translation_metrics(hyps, refs, bleu_tokenize)
    if task == "CSLR":
        return wer_metrics(hyps, refs)
    if task == "ISLR":
        return islr_metrics(hyps, refs)
    raise ValueError(f"unknown task {task!r}: expected 'SLT', 'ISLR' or 'CSLR'")


def bleu_sentence_stats(hyps, refs):
    """(N, 10) int array of each pair's BLEU sufficient statistics: hypothesis and reference length, then the
    matched and the total n-grams of orders 1-4 (sacrebleu, 13a, as translation_metrics scores).

    Corpus BLEU only sums these over the sentences, so the BLEU of any multiset of sentences (a bootstrap
    resample) is bleu4_from_stats of the rows' sum: one tokenisation per sentence, not one per resample."""
    _check_lengths(hyps, refs)
    bleu = BLEU(max_ngram_order=4, tokenize="13a", smooth_method="exp")
    rows = []
    for hyp, ref in zip(hyps, refs):
        stats = bleu.corpus_score([hyp], [[ref]])
        rows.append([stats.sys_len, stats.ref_len, *stats.counts, *stats.totals])
    return np.array(rows, dtype=np.int64)


def bleu4_from_stats(summed):
    """Corpus BLEU-4 (exp smoothing) of summed bleu_sentence_stats rows: sacrebleu's own formula."""
    summed = [int(v) for v in summed]
    return BLEU.compute_bleu(summed[2:6], summed[6:10], summed[0], summed[1], smooth_method="exp",
                             max_ngram_order=4).score


def _difference_summary(deltas, observed):
    """Observed difference, percentile 95 % interval of the resampled differences, two-sided p-value.

    p = (1 + #{b : |d_b - mean(d)| >= |observed|}) / (B + 1): the resampled differences shifted to mean 0
    stand for the null hypothesis "no difference" (Efron & Tibshirani 1993, 16.4), and the +1s count the
    observed sample itself, so p is never 0. Identical systems: every d_b = 0, so p = 1 (sacrebleu's paired_bs
    centres |d_b| and counts strictly greater ones, which gives identical systems p = 1 / (B + 1))."""
    low, high = np.percentile(deltas, [2.5, 97.5])
    extreme = int(np.sum(np.abs(deltas - deltas.mean()) >= abs(observed)))
    return {"difference": float(observed), "ci95": [float(low), float(high)],
            "p_value": (1 + extreme) / (len(deltas) + 1)}


def holm(p_values):
    """Holm's step-down correction for m comparisons (Holm, Scand. J. Statistics 1979): with the p-values sorted,
    p_(1) <= ... <= p_(m), the adjusted p_(k) = max_{j <= k} min(1, (m - j + 1) p_(j)); returned in the input's
    order. It controls the family-wise error like Bonferroni's m p, and rejects at least as much."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_bootstrap(baseline, system, refs, dataset="", resamples=1000, seed=0):
    """Paired bootstrap resampling (Koehn 2004) of system minus baseline, BLEU-4 and ROUGE-L, on one reference
    list: each resample draws N sentence indices with replacement (numpy Generator seeded with `seed`) and
    scores both systems on the same indices. Texts are formatted for `dataset` as evaluate() does.

    Why not sacrebleu's paired_bs: it would compute our BLEU-4 (the same sacrebleu BLEU on the formatted
    texts), but it resamples sacrebleu metrics only, and our ROUGE-L is the rouge 1.0.1 protocol (rouge_l_f),
    which sacrebleu lacks; its p-value rule also calls identical systems different (see _difference_summary).
    So both metrics are resampled here with our own scorer, on the same indices. BLEU comes from per-sentence
    statistics (bleu_sentence_stats; on the identity resample it equals translation_metrics' bleu4 exactly) and
    ROUGE-L is a mean of per-sentence F, so a resample costs sums, not a tokenisation.
    Returns {"samples", "resamples", "seed", "baseline": {bleu4, rouge}, "system": {...},
    "bleu4": {difference, ci95, p_value}, "rouge": {...}}."""
    _check_lengths(baseline, refs)
    _check_lengths(system, refs)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1 (got {resamples})")
    refs = format_for_dataset(refs, dataset, is_reference=True)
    sides = {}
    for side, hyps in (("baseline", baseline), ("system", system)):
        hyps = format_for_dataset(hyps, dataset, is_reference=False)
        sides[side] = (bleu_sentence_stats(hyps, refs), np.array([rouge_l_f(h, r) for h, r in zip(hyps, refs)]))
    rng = np.random.default_rng(seed)
    drawn = {side: np.empty((resamples, 2)) for side in sides}
    for b in range(resamples):
        index = rng.integers(0, len(refs), len(refs))
        for side, (stats, rouge) in sides.items():
            drawn[side][b] = bleu4_from_stats(stats[index].sum(0)), 100.0 * rouge[index].mean()
    result = {"samples": len(refs), "resamples": resamples, "seed": seed}
    for side, (stats, rouge) in sides.items():
        result[side] = {"bleu4": bleu4_from_stats(stats.sum(0)), "rouge": 100.0 * float(rouge.mean())}
    for k, metric in enumerate(("bleu4", "rouge")):
        deltas = drawn["system"][:, k] - drawn["baseline"][:, k]
        result[metric] = _difference_summary(deltas, result["system"][metric] - result["baseline"][metric])
    return result


def read_reference_file(path):
    """(names, texts) of a `sample: NAME, prediction: TEXT` / `..., ground-truth: TEXT` file."""
    names, texts = [], []
    for number, line in enumerate(_read_lines(path), start=1):
        match = _SAMPLE_LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected 'sample: NAME, prediction|ground-truth: TEXT'")
        names.append(match.group(1))
        texts.append(match.group(2))
    return names, texts


def _read_lines(path):
    """Lines without their line ending; an empty line is an empty sentence."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_sentences(path):
    """One sentence per line, or the literature's `sample: ...` format when every line has it."""
    return _read_named(path)[1]


def _read_named(path):
    """(sample names, sentences) of a `sample: ...` file; (None, sentences) of plain lines."""
    lines = _read_lines(path)
    if lines and all(_SAMPLE_LINE.match(line) for line in lines):
        return read_reference_file(path)
    return None, lines


def _read_input(flag, path):
    """_read_named of a command-line file, or stop with one `error:` line naming the flag and the file."""
    try:
        names, texts = _read_named(path)
    except UnicodeDecodeError:
        sys.exit(f"error: {flag} {path} is not UTF-8 text: pass a text file with one sentence per line")
    except OSError as err:
        sys.exit(f"error: {flag} {path}: cannot read it ({err.strerror or err})")
    except ValueError as err:  # a line that breaks the `sample: ...` format: the message names file and line
        sys.exit(f"error: {flag} {err}")
    if not texts:
        sys.exit(f"error: {flag} {path} is empty: it must hold one sentence per line")
    return names, texts


def _check_pairs_with_reference(flag, path, names, texts, ref_path, ref_names, refs):
    """Stop with one `error:` line when a hypothesis file does not pair up line by line with the references
    (other line count, or other sample names in `sample: ...` files)."""
    if len(texts) != len(refs):
        sys.exit(f"error: {flag} {path} has {len(texts)} lines but --ref {ref_path} has {len(refs)}: the files "
                 "must pair up line by line")
    if names is not None and ref_names is not None and names != ref_names:
        line = next(k for k, (a, b) in enumerate(zip(names, ref_names)) if a != b) + 1
        sys.exit(f"error: {flag} {path} line {line} is sample {names[line - 1]!r} but --ref {ref_path} line {line} "
                 f"is {ref_names[line - 1]!r}: the files must list the same samples in the same order")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Score hypotheses against references, or compare two systems.")
    parser.add_argument("--hyp", required=True, help="hypotheses, one sentence per line")
    parser.add_argument("--ref", required=True, help="references, one sentence per line")
    parser.add_argument("--dataset", default="", help="decides the formatting (CSL datasets: characters)")
    parser.add_argument("--task", default="SLT", choices=["SLT", "ISLR", "CSLR"])
    parser.add_argument("--bleu_tokenize", default=DEFAULT_BLEU_TOKENIZE, choices=[*BLEU_PROTOCOLS, "both"],
                        help="SLT's BLEU protocol: 13a (GFSLT-VLP, Uni-Sign), none (signjoey's raw corpus BLEU), "
                             "or both (one result per protocol, each with its signature)")
    parser.add_argument("--baseline", default=None,
                        help="a second system's hypotheses: paired bootstrap of --hyp minus --baseline (SLT)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (with --baseline)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (with --baseline)")
    args = parser.parse_args(argv)
    if args.baseline is not None and args.task != "SLT":
        sys.exit(f"error: --baseline compares BLEU-4 and ROUGE-L, so it needs --task SLT (got --task {args.task})")
    if args.baseline is not None and args.bleu_tokenize != DEFAULT_BLEU_TOKENIZE:
        sys.exit(f"error: --baseline resamples the {DEFAULT_BLEU_TOKENIZE} BLEU only; leave out --bleu_tokenize "
                 f"{args.bleu_tokenize}")
    if args.resamples < 1:
        sys.exit(f"error: --resamples must be at least 1 (got {args.resamples})")
    ref_names, refs = _read_input("--ref", args.ref)
    hyps = {}
    for flag, path in (("--hyp", args.hyp), ("--baseline", args.baseline)):
        if path is not None:
            names, hyps[flag] = _read_input(flag, path)
            _check_pairs_with_reference(flag, path, names, hyps[flag], args.ref, ref_names, refs)
    try:
        if args.baseline is None and args.bleu_tokenize == "both":
            result = {tokenize: evaluate(hyps["--hyp"], refs, args.dataset, args.task, tokenize)
                      for tokenize in BLEU_PROTOCOLS}
        elif args.baseline is None:
            result = evaluate(hyps["--hyp"], refs, args.dataset, args.task, args.bleu_tokenize)
        else:
            result = paired_bootstrap(hyps["--baseline"], hyps["--hyp"], refs, args.dataset, args.resamples,
                                      args.seed)
    except ValueError as err:  # e.g. references without a word (WER)
        sys.exit(f"error: --ref {args.ref}: {err}")
    json.dump(result, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

"""Sign language translation / recognition metrics, following the literature's protocol.

SLT: cumulative BLEU-1..4 (sacrebleu, 13a, exp smoothing) and ROUGE-L F as the `rouge` 1.0.1
package computes it. CSLR: word error rate with substitution / insertion / deletion rates.
ISLR: top-1 per-instance and per-class accuracy. All scores are percentages.
CLI: python SLRT_metrics.py --hyp H.txt --ref R.txt [--dataset CSL_Daily] [--task SLT]
"""
import argparse
import json
import re
import sys
from collections import defaultdict

from sacrebleu.metrics import BLEU

import config

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


def translation_metrics(hyps, refs):
    """bleu1..bleu4 (cumulative, corpus level), rouge and the sacrebleu BLEU-4 signature."""
    _check_lengths(hyps, refs)
    bleu = BLEU(max_ngram_order=4, tokenize="13a", smooth_method="exp")
    stats = bleu.corpus_score(hyps, [refs])
    result = {}
    for order in range(1, 5):
        # Order-k n-gram counts do not depend on the maximum order, so one tokenisation pass serves
        # all four (identical to BLEU(max_ngram_order=order); 4x faster).
        score = BLEU.compute_bleu(stats.counts[:order], stats.totals[:order], stats.sys_len, stats.ref_len,
                                  smooth_method="exp", max_ngram_order=order)
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


def evaluate(hyps, refs, dataset, task):
    """Format for the dataset, then score with the task's metrics ('SLT' | 'ISLR' | 'CSLR').

    Only SLT is character-formatted on CSL datasets: CSLR glosses and ISLR words are scored whole.
    """
    _check_lengths(hyps, refs)
    if task == "SLT":
        hyps = format_for_dataset(hyps, dataset, is_reference=False)
        refs = format_for_dataset(refs, dataset, is_reference=True)
        return translation_metrics(hyps, refs)
    if task == "CSLR":
        return wer_metrics(hyps, refs)
    if task == "ISLR":
        return islr_metrics(hyps, refs)
    raise ValueError(f"unknown task {task!r}: expected 'SLT', 'ISLR' or 'CSLR'")


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
    lines = _read_lines(path)
    if lines and all(_SAMPLE_LINE.match(line) for line in lines):
        return read_reference_file(path)[1]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description="Score hypotheses against references.")
    parser.add_argument("--hyp", required=True, help="hypotheses, one sentence per line")
    parser.add_argument("--ref", required=True, help="references, one sentence per line")
    parser.add_argument("--dataset", default="", help="decides the formatting (CSL datasets: characters)")
    parser.add_argument("--task", default="SLT", choices=["SLT", "ISLR", "CSLR"])
    args = parser.parse_args(argv)
    result = evaluate(read_sentences(args.hyp), read_sentences(args.ref), args.dataset, args.task)
    json.dump(result, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

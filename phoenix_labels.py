"""PHOENIX-2014T's own annotation files, `annotations/manual/PHOENIX-2014-T.{split}.corpus.csv`, read as they
are: '|'-separated, header name|video|start|end|speaker|orth|translation (orth: the DGS glosses, translation:
the German sentence, lower-cased and tokenised as the corpus ships it). Used by datasets.py for a label path
ending in .csv.

Public: read_corpus_csv, CORPUS_CSV_FORMAT, CORPUS_CSV_COLUMNS.
"""
import csv

CORPUS_CSV_COLUMNS = ["name", "video", "start", "end", "speaker", "orth", "translation"]
CORPUS_CSV_FORMAT = f"PHOENIX-2014-T's corpus CSV: '|'-separated, header {'|'.join(CORPUS_CSV_COLUMNS)}"


def read_corpus_csv(label_path, phase, task):
    """(names, texts) of a corpus CSV: each sample is named <phase>/<name> (the shipped labels' names, and its
    pose file's path), its text the translation (SLT, ISLR) or the glosses (CSLR), whitespace collapsed.
    ValueError (or UnicodeDecodeError, csv.Error) names the line for a file of another shape."""
    names, texts = [], []
    with open(label_path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header != CORPUS_CSV_COLUMNS:
            raise ValueError(f"header {header!r}")
        column = "orth" if task == "CSLR" else "translation"
        for number, row in enumerate(rows, start=2):
            if len(row) != len(CORPUS_CSV_COLUMNS):
                raise ValueError(f"line {number} has {len(row)} fields")
            entry = dict(zip(CORPUS_CSV_COLUMNS, row))
            if not entry[column].strip():
                raise ValueError(f"line {number} ({entry['name']}) has an empty {column}")
            names.append(f"{phase}/{entry['name']}")
            texts.append(" ".join(entry[column].split()))
    return names, texts

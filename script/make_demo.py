"""Build the built-in demo: a tiny mT5 with its own tokenizer and a synthetic CSL-Daily-format dataset.

    python script/make_demo.py [--out_root .] [--seed 0]

Writes, with no download and deterministically for a seed, in a few seconds:
  <out_root>/pretrained_weight/mt5-demo/   tiny mT5 (save_pretrained) + SentencePiece tokenizer
  <out_root>/data/demo/labels.{train,dev,test}   gzip pickles {name: {'name','gloss','text','video_path'}}
  <out_root>/data/demo/pose_format/<name>.pkl    dict(keypoints=[(1,133,2)], scores=[(1,133)]) per frame
The sentences are real CSL-Daily sentences made only of frequent glosses; each gloss has its own synthetic
motion of hands, arms and face, and a video chains its glosses' motions, so a model can learn to translate.
"""
import argparse
import gzip
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections import Counter

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PROMPT_TEXTS = ("Translate sign language video to Chinese: ", "Translate sign language video to English: ")
SOURCE_LABELS = os.path.join(ROOT, "data", "CSL_Daily", "labels.train")
NUM_GLOSSES = 60           # the most frequent CSL-Daily glosses the demo sentences may use
GLOSSES_PER_SENTENCE = (2, 6)
SAMPLES_PER_PHASE = {"train": 400, "dev": 60, "test": 60}
HELD_OUT_FRACTION = 0.12   # sentences never seen in training, shared out to dev and test


# ----------------------------------------------------------------------------- tokenizer and tiny mT5
def build_tokenizer_and_mt5(texts, out_dir, seed=0):
    """Train a SentencePiece tokenizer on `texts`, build a tiny seeded mT5 around it, save both to `out_dir`.

    T5 conventions: pad=0, eos=1, unk=2, no bos; every encoding ends with </s>. The normaliser is the
    identity so Chinese punctuation round-trips through encode/decode unchanged.
    Both `AutoTokenizer.from_pretrained(out_dir)` and `MT5ForConditionalGeneration.from_pretrained(out_dir)` load it.
    """
    import sentencepiece as spm
    import torch
    from transformers import AutoTokenizer, MT5Config, MT5ForConditionalGeneration

    os.makedirs(out_dir, exist_ok=True)
    spm.set_random_generator_seed(seed)
    corpus = sorted(set(texts) | set(PROMPT_TEXTS))
    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus), model_prefix=os.path.join(tmp, "spiece"), model_type="unigram",
            vocab_size=2000, hard_vocab_limit=False,  # small corpora yield fewer pieces: take what there is
            character_coverage=1.0, normalization_rule_name="identity", num_threads=1, minloglevel=2,
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>")
        shutil.copy(os.path.join(tmp, "spiece.model"), os.path.join(out_dir, "spiece.model"))
    config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>", "unk_token": "<unk>",
              "pad_token": "<pad>", "model_max_length": 512}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    # Loading spiece.model converts it to a fast tokenizer; saving again adds tokenizer.json.
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    mt5_config = MT5Config(
        vocab_size=len(tokenizer), d_model=128, d_kv=32, num_heads=4, d_ff=256, num_layers=2,
        num_decoder_layers=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        tie_word_embeddings=False, dropout_rate=0.1)
    cpu_rng_state = torch.get_rng_state()
    torch.manual_seed(seed)
    model = MT5ForConditionalGeneration(mt5_config)
    torch.set_rng_state(cpu_rng_state)  # leave the caller's random stream untouched
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


# ----------------------------------------------------------------------------- sentences and labels
def choose_sentences(source_labels=SOURCE_LABELS):
    """Distinct real CSL-Daily (gloss tuple, text) pairs whose glosses are all among the NUM_GLOSSES most frequent."""
    with gzip.open(source_labels, "rb") as f:
        from datasets import safe_pickle_load
        labels = safe_pickle_load(f)
    counts = Counter(g for item in labels.values() for g in item["gloss"])
    frequent = {g for g, _ in counts.most_common(NUM_GLOSSES)}
    by_glosses, seen_texts = {}, set()
    for name in sorted(labels):
        glosses, text = tuple(labels[name]["gloss"]), labels[name]["text"]
        lo, hi = GLOSSES_PER_SENTENCE
        if lo <= len(glosses) <= hi and set(glosses) <= frequent and glosses not in by_glosses \
                and text not in seen_texts:
            by_glosses[glosses] = text
            seen_texts.add(text)
    return sorted(by_glosses.items())


def split_sentences(sentences, rng):
    """Hold out a few sentences (all of whose glosses occur in the rest) for dev/test only."""
    order = rng.permutation(len(sentences))
    n_held = int(round(HELD_OUT_FRACTION * len(sentences)))
    train, held = [], []
    for i in order:
        glosses = sentences[i][0]
        rest_glosses = {g for j in order if j != i and sentences[j] not in held for g in sentences[j][0]}
        if len(held) < n_held and set(glosses) <= rest_glosses:
            held.append(sentences[i])
        else:
            train.append(sentences[i])
    return sorted(train), sorted(held)


def write_labels(path, items):
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime=0: same bytes on every build
        pickle.dump(items, f, protocol=4)


def build_demo(out_root, seed=0):
    """Build the whole demo under `out_root`; returns dict of paths (mt5_path, label_paths, pose_dir, demo_dir)."""
    rng = np.random.default_rng(seed)
    demo_dir = os.path.join(out_root, "data", "demo")
    pose_dir = os.path.join(demo_dir, "pose_format")
    mt5_path = os.path.join(out_root, "pretrained_weight", "mt5-demo")
    for folder in (pose_dir, mt5_path):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    sentences = choose_sentences()
    train_sentences, held_out = split_sentences(sentences, rng)
    vocabulary = sorted({g for glosses, _ in sentences for g in glosses})
    motions = {g: random_gloss_motion(rng) for g in vocabulary}
    label_paths, take = {}, 0
    for phase, n in SAMPLES_PER_PHASE.items():
        if phase == "train":
            pool = [train_sentences[i % len(train_sentences)] for i in range(n)]
        else:  # this phase's half of the held-out sentences, then fresh renditions of training sentences
            half = held_out[0::2] if phase == "dev" else held_out[1::2]
            pool = half + [train_sentences[i] for i in rng.integers(0, len(train_sentences), n - len(half))]
        items = {}
        for glosses, text in pool:
            name = f"S{sentences.index((glosses, text)):06d}_P{take:04d}_T00"
            take += 1
            items[name] = {"name": name, "gloss": list(glosses), "text": text, "video_path": name + ".mp4"}
            write_pose(os.path.join(pose_dir, name + ".pkl"), synthesise_video(glosses, motions, rng))
        label_paths[phase] = os.path.join(demo_dir, "labels." + phase)
        write_labels(label_paths[phase], items)
    build_tokenizer_and_mt5([text for _, text in sentences], mt5_path, seed=seed)
    return {"demo_dir": demo_dir, "pose_dir": pose_dir, "mt5_path": mt5_path, "label_paths": label_paths}

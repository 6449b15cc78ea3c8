"""Build the built-in demo: a tiny mT5 with its own tokenizer and a synthetic CSL-Daily-format dataset.

    python script/make_demo.py [--out_root .] [--seed 0] [--render N]

Writes, with no download and deterministically for a seed, in a few seconds:
  <out_root>/pretrained_weight/mt5-demo/   tiny mT5 (save_pretrained) + SentencePiece tokenizer
  <out_root>/data/demo/labels.{train,dev,test}   gzip pickles {name: {'name','gloss','text','video_path'}}
  <out_root>/data/demo/pose_format/<name>.pkl    dict(keypoints=[(1,133,2)], scores=[(1,133)]) per frame
The sentences are real CSL-Daily sentences made only of frequent glosses; each gloss has its own synthetic
motion of hands, arms and face, and a video chains its glosses' motions, so a model can learn to translate.
--render N draws the first N test samples' skeletons to <out_root>/data/demo/render/<name>.mp4.
"""
import argparse
import gzip
import io
import json
import os
import pickle
import shutil
import time
from collections import Counter

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SOURCE_LABELS = os.path.join(ROOT, "data", "CSL_Daily", "labels.train")
NUM_GLOSSES = 60           # the most frequent CSL-Daily glosses the demo sentences may use
GLOSSES_PER_SENTENCE = (2, 4)  # inclusive, as is FRAMES_PER_GLOSS. Short videos keep the 256-channel ST-GCNs
FRAMES_PER_GLOSS = (2, 3)      # cheap on CPU: 7 epochs learn what 12 did with 2-6 glosses of 3-4 frames
SAMPLES_PER_PHASE = {"train": 300, "dev": 50, "test": 50}
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

    from datasets import PROMPTS
    os.makedirs(out_dir, exist_ok=True)
    spm.set_random_generator_seed(seed)
    corpus = sorted(set(texts) | set(PROMPTS.values()))
    model_proto = io.BytesIO()  # in memory: a model_prefix path would be recorded in the model, breaking determinism
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model_proto, model_type="unigram",
        vocab_size=2000, hard_vocab_limit=False,  # small corpora yield fewer pieces: take what there is
        character_coverage=1.0, normalization_rule_name="identity", num_threads=1, minloglevel=2,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>")
    with open(os.path.join(out_dir, "spiece.model"), "wb") as f:
        f.write(model_proto.getvalue())
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
    # transformers 5 forces MT5Config.tie_word_embeddings to True; mT5 checkpoints have their own lm_head,
    # so give it one (from_pretrained keeps the two apart when both are saved). Its std is d_model^-0.5, not
    # MT5's 1.0: MT5 does not rescale the decoder output, and std 1.0 would start from logits of std ~sqrt(d_model).
    lm_head = torch.randn(len(tokenizer), mt5_config.d_model) * mt5_config.d_model ** -0.5
    model.lm_head.weight = torch.nn.Parameter(lm_head)
    torch.set_rng_state(cpu_rng_state)  # leave the caller's random stream untouched
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


# ----------------------------------------------------------------------------- a tiny mT5 and random batches
TINY_SENTENCES = ["他现在在哪儿呢？", "你最喜欢哪个季节？", "今天天气很好，我们一起去公园散步吧。",
                  "他什么时候能回来？"]


def build_tiny_mt5(out_dir):
    """A small tokenizer + mT5 (the demo's builder on a few sentences), written to out_dir: for tests and
    benchmarks that need a model, not the demo's data."""
    return build_tokenizer_and_mt5(TINY_SENTENCES, out_dir, seed=0)  # the builder adds the prompts


def random_batch(tokenizer, batch_size, frames, text_len, seed=0):
    """A collated batch of the interface's shape (datasets.PoseCollator's): smooth random poses, varied
    lengths, ~text_len targets; for tests and benchmarks of the model without data files."""
    import torch

    from datasets import PART_INDICES, PROMPTS
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(frames * 3 // 4, frames + 1, (batch_size,), generator=gen)
    lengths[0] = frames
    pose = {}
    for part, nodes in ((part, len(indices)) for part, indices in PART_INDICES.items()):
        walk = torch.cumsum(torch.randn(batch_size, frames, nodes, 2, generator=gen) * 0.02, dim=1)
        xy = (torch.rand(batch_size, 1, nodes, 2, generator=gen) * 2 - 1 + walk).clamp(-1, 1)
        score = torch.rand(batch_size, frames, nodes, 1, generator=gen)
        pose[part] = torch.cat([xy, score], dim=-1)
    pose_mask = (torch.arange(frames)[None] < lengths[:, None]).long()
    prompt = tokenizer([PROMPTS["Chinese"]] * batch_size, return_tensors="pt", padding=True)
    ids = torch.randint(3, len(tokenizer), (batch_size, text_len), generator=gen)
    ids[:, -1] = tokenizer.eos_token_id
    labels = ids.clone()
    labels[1::2, text_len * 3 // 4:] = -100  # every other target shorter: padding is exercised
    return {"pose": pose, "pose_mask": pose_mask, "prompt_ids": prompt.input_ids, "prompt_mask": prompt.attention_mask,
            "labels": labels}


# ----------------------------------------------------------------------------- synthetic poses
# Neutral upper body of a signer facing the camera, image coordinates in [0, 1] (COCO-WholeBody indices).
BODY_TEMPLATE = {0: (0.50, 0.25), 1: (0.52, 0.23), 2: (0.48, 0.23), 3: (0.55, 0.24), 4: (0.45, 0.24),
                 5: (0.62, 0.38), 6: (0.38, 0.38), 11: (0.58, 0.72), 12: (0.42, 0.72), 13: (0.58, 0.92),
                 14: (0.42, 0.92), 15: (0.58, 1.0), 16: (0.42, 1.0)}
OUT_OF_FRAME = list(range(13, 23))     # knees, ankles and feet: below the frame, low confidence
LEFT_HAND, RIGHT_HAND = 91, 112        # first index of each 21-point hand (the signer's left / right)
HAND_UNIT, UPPER_ARM, FACE_HALF_WIDTH = 0.045, 0.17, 0.055
# Per finger (thumb..pinky): fan angle from the hand's direction, wrist-to-first-joint distance, 3 segment lengths.
FINGER_FAN = np.radians([60.0, 20.0, 5.0, -10.0, -25.0])
FINGER_ROOT = np.array([0.35, 0.9, 0.9, 0.85, 0.8])
FINGER_SEGMENTS = np.array([[0.35, 0.3, 0.25], [0.4, 0.25, 0.2], [0.45, 0.28, 0.2], [0.4, 0.26, 0.2],
                            [0.32, 0.2, 0.17]])
# Motion channels of a gloss, evaluated at its phase s in [0, 1].
CHANNELS = {"right_wrist": slice(0, 2), "left_wrist": slice(2, 4), "right_curl": slice(4, 9),
            "left_curl": slice(9, 14), "right_angle": slice(14, 15), "left_angle": slice(15, 16),
            "mouth": slice(16, 17), "brow": slice(17, 18), "head": slice(18, 20)}
NUM_CHANNELS, NUM_HARMONICS = 20, 2


def random_gloss_motion(rng):
    """A gloss's motion: per channel a base value and the amplitudes of cos/sin(pi k s), k = 1..NUM_HARMONICS."""
    base, spread = np.zeros(NUM_CHANNELS), np.zeros(NUM_CHANNELS)
    two_handed = rng.random() < 0.5

    def channel(name, centre, centre_spread, motion_spread):
        part = CHANNELS[name]
        base[part] = centre + centre_spread * rng.standard_normal(part.stop - part.start)
        spread[part] = motion_spread
    channel("right_wrist", np.array([0.44, 0.46]), 0.05, 0.045)
    channel("left_wrist", np.array([0.56, 0.46]) if two_handed else np.array([0.62, 0.70]),
            0.05 if two_handed else 0.0, 0.045 if two_handed else 0.005)
    channel("right_curl", 0.0, 2.0, 1.2)
    channel("left_curl", 0.0, 2.0, 1.2 if two_handed else 0.2)
    channel("right_angle", -np.pi / 2, 0.6, 0.5)
    channel("left_angle", -np.pi / 2, 0.6, 0.5 if two_handed else 0.1)
    channel("mouth", -1.0, 1.5, 1.0)
    channel("brow", 0.0, 1.0, 0.8)
    channel("head", 0.0, 0.0, 0.012)
    decay = np.arange(1, NUM_HARMONICS + 1)[:, None]  # higher harmonics move less: smooth trajectories
    harmonics = rng.standard_normal((2, NUM_HARMONICS, NUM_CHANNELS)) * spread / decay
    return {"base": base, "cos": harmonics[0], "sin": harmonics[1]}


def evaluate_motion(motion, phase, amplitude):
    """Channels (n, NUM_CHANNELS) at phases (n,): base + amplitude * sum_k (a_k cos(pi k s) + b_k sin(pi k s))."""
    k_s = np.pi * np.outer(phase, np.arange(1, NUM_HARMONICS + 1))
    return motion["base"] + amplitude * (np.cos(k_s) @ motion["cos"] + np.sin(k_s) @ motion["sin"])


def hand_points(wrist, angle, curl_logits, mirror):
    """21 hand points (T, 21, 2): fingers fanned around `angle`, each segment foreshortened and bent by its curl."""
    curl = 1.0 / (1.0 + np.exp(-curl_logits))                                       # (T, 5) in (0, 1)
    points = [wrist]
    root_angle = angle[:, None] + mirror * FINGER_FAN                              # (T, 5)
    root = wrist[:, None] + HAND_UNIT * FINGER_ROOT[:, None] * np.stack([np.cos(root_angle), np.sin(root_angle)], -1)
    direction = angle[:, None] + mirror * 0.5 * FINGER_FAN
    joints = [root]
    for j in range(3):
        direction = direction + mirror * 0.6 * curl
        length = HAND_UNIT * FINGER_SEGMENTS[:, j] * (1.0 - 0.75 * curl)
        joints.append(joints[-1] + length[..., None] * np.stack([np.cos(direction), np.sin(direction)], -1))
    fingers = np.stack(joints, axis=2)                                             # (T, 5, 4, 2)
    points.extend(fingers.reshape(len(wrist), 20, 2).transpose(1, 0, 2))
    return np.stack(points, axis=1)


def elbow_points(shoulder, wrist, outward):
    """Elbow (T, 2) for a two-segment arm of equal segments UPPER_ARM, bent outward and down."""
    middle, half = (shoulder + wrist) / 2, (wrist - shoulder) / 2
    half_length = np.linalg.norm(half, axis=-1, keepdims=True)
    bend = np.sqrt(np.maximum(UPPER_ARM ** 2 - half_length ** 2, 1e-4))
    normal = np.stack([half[:, 1], -half[:, 0]], -1) / np.maximum(half_length, 1e-6)
    normal *= np.where(normal[:, :1] * outward >= 0, 1.0, -1.0)
    return middle + bend * normal


def face_points(centre, mouth_open, brow_raise, half_width):
    """68 face landmarks (T, 68, 2) (iBUG order) around `centre`: jaw, brows, nose, eyes, mouth."""
    t = len(centre)

    def ring(n, radius_x, radius_y, centre_x=0.0, centre_y=0.0):  # n points on an ellipse, (T, n, 2)
        angle = 2 * np.pi * np.arange(n) / n
        x = np.broadcast_to(centre_x + radius_x * np.cos(angle), (t, n))
        return np.stack([x, centre_y + np.asarray(radius_y).reshape(-1, 1) * np.sin(angle) + np.zeros((t, 1))], -1)
    k = np.pi * np.arange(17) / 16
    jaw = np.broadcast_to(np.stack([-np.cos(k), -0.3 + 1.1 * np.sin(k)], -1), (t, 17, 2))
    brow_x = np.r_[np.linspace(-0.8, -0.2, 5), np.linspace(0.2, 0.8, 5)]
    brows = np.stack(np.broadcast_arrays(brow_x[None], -0.75 - 0.25 * brow_raise[:, None]), -1)
    nose = np.broadcast_to(np.stack([np.r_[np.zeros(4), np.linspace(-0.25, 0.25, 5)],
                                     np.r_[np.linspace(-0.55, -0.05, 4), np.full(5, 0.05)]], -1), (t, 9, 2))
    eyes = [ring(6, 0.18, 0.07, -0.45, -0.5), ring(6, 0.18, 0.07, 0.45, -0.5)]
    mouth = [ring(12, 0.4, 0.1 + 0.4 * mouth_open, 0.0, 0.4), ring(8, 0.28, 0.03 + 0.35 * mouth_open, 0.0, 0.4)]
    local = np.concatenate([jaw, brows, nose] + eyes + mouth, axis=1)
    return centre[:, None] + half_width * local


def synthesise_video(glosses, motions, rng):
    """One rendition of a sentence: (keypoints (T, 133, 2), scores (T, 133)) float32, plus frames of extra people."""
    pieces = []
    for gloss in glosses:   # each gloss at its own speed, sampled with timing jitter, with its own amplitude
        n = int(rng.integers(FRAMES_PER_GLOSS[0], FRAMES_PER_GLOSS[1] + 1))
        phase = np.clip(np.linspace(0, 1, n) + rng.uniform(-0.4, 0.4, n) / n, 0, 1)
        pieces.append(evaluate_motion(motions[gloss], phase, rng.uniform(0.85, 1.15)))
    channel = np.concatenate(pieces)
    t = len(channel)
    get = lambda name: channel[:, CHANNELS[name]]  # noqa: E731
    points = np.zeros((t, 133, 2))
    for index, xy in BODY_TEMPLATE.items():
        points[:, index] = xy
    head = get("head")
    points[:, 0:5] += head[:, None]
    points[:, 17:23] = points[:, 15:17].mean(1, keepdims=True) + rng.uniform(-0.05, 0.05, (6, 2))
    points[:, 10], points[:, 9] = get("right_wrist"), get("left_wrist")
    points[:, 8] = elbow_points(points[:, 6], points[:, 10], outward=-1.0)
    points[:, 7] = elbow_points(points[:, 5], points[:, 9], outward=+1.0)
    mouth, brow = (1.0 / (1.0 + np.exp(-get(name)[:, 0])) for name in ("mouth", "brow"))
    # centred just below the nose so that landmark 30 (the nose tip, local y -0.05) lands on body point 0
    points[:, 23:91] = face_points(points[:, 0] + (0.0, 0.05 * FACE_HALF_WIDTH), mouth, brow, FACE_HALF_WIDTH)
    points[:, RIGHT_HAND:RIGHT_HAND + 21] = hand_points(points[:, 10], get("right_angle")[:, 0], get("right_curl"), 1.0)
    points[:, LEFT_HAND:LEFT_HAND + 21] = hand_points(points[:, 9], get("left_angle")[:, 0], get("left_curl"), -1.0)
    scale, shift = rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05, 2)  # this signer's size and place in the frame
    points = (points - 0.5) * scale + 0.5 + shift + rng.normal(0, 0.003, points.shape)
    scores = rng.uniform(0.6, 1.0, (t, 133))
    scores[:, OUT_OF_FRAME] = rng.uniform(0.02, 0.25, (t, len(OUT_OF_FRAME)))
    for first in (LEFT_HAND, RIGHT_HAND):  # occasional frames where the detector loses a hand
        lost = rng.random(t) < 0.08
        scores[lost, first:first + 21] = rng.uniform(0.02, 0.28, (lost.sum(), 21))
        points[lost, first:first + 21] += rng.normal(0, 0.03, (lost.sum(), 21, 2))
    return np.clip(points, 0, 1).astype(np.float32), scores.astype(np.float32)


def write_pose(path, video, rng):
    """Write in the RTMPose format: lists over frames of (P, 133, 2) and (P, 133) arrays, person 0 the signer."""
    points, scores = video
    keypoints, confidences = [], []
    bystander = rng.random() < 0.05  # a few videos have a second person in some frames
    for t in range(len(points)):
        frame_points, frame_scores = points[t:t + 1], scores[t:t + 1]
        if bystander and rng.random() < 0.5:
            other = np.clip(frame_points + (0.35, 0.05), 0, 1).astype(np.float32)
            frame_points = np.concatenate([frame_points, other])
            frame_scores = np.concatenate([frame_scores, frame_scores * np.float32(0.8)])
        keypoints.append(np.ascontiguousarray(frame_points))
        confidences.append(np.ascontiguousarray(frame_scores))
    with open(path, "wb") as f:
        pickle.dump({"keypoints": keypoints, "scores": confidences}, f, protocol=4)


# ----------------------------------------------------------------------------- sentences and labels
def choose_sentences(source_labels=SOURCE_LABELS):
    """Distinct real CSL-Daily (gloss tuple, text) pairs whose glosses are all among the NUM_GLOSSES most frequent."""
    with gzip.open(source_labels, "rb") as f:
        from safe_pickle import safe_pickle_load
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
    """Build the whole demo under `out_root`; returns dict of paths (mt5_path, label_paths, pose_dir, demo_dir).

    Both folders are built beside their final place and then swapped in, so a run reading an older demo
    never sees a half-written one.
    """
    rng = np.random.default_rng(seed)
    demo_dir = os.path.join(out_root, "data", "demo")
    mt5_path = os.path.join(out_root, "pretrained_weight", "mt5-demo")
    staging = {final: f"{final}.building-{os.getpid()}" for final in (demo_dir, mt5_path)}
    for folder in staging.values():
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    sentences = write_demo_data(staging[demo_dir], rng)
    build_tokenizer_and_mt5([text for _, text in sentences], staging[mt5_path], seed=seed)
    for final, staged in staging.items():
        replace_folder(final, staged)
    label_paths = {phase: os.path.join(demo_dir, "labels." + phase) for phase in SAMPLES_PER_PHASE}
    return {"demo_dir": demo_dir, "pose_dir": os.path.join(demo_dir, "pose_format"), "mt5_path": mt5_path,
            "label_paths": label_paths}


def write_demo_data(demo_dir, rng):
    """Label files and one pose pickle per sample under demo_dir; returns the chosen (glosses, text) sentences."""
    pose_dir = os.path.join(demo_dir, "pose_format")
    os.makedirs(pose_dir)
    sentences = choose_sentences()
    train_sentences, held_out = split_sentences(sentences, rng)
    vocabulary = sorted({g for glosses, _ in sentences for g in glosses})
    motions = {g: random_gloss_motion(rng) for g in vocabulary}
    take = 0
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
            write_pose(os.path.join(pose_dir, name + ".pkl"), synthesise_video(glosses, motions, rng), rng)
        write_labels(os.path.join(demo_dir, "labels." + phase), items)
    return sentences


def replace_folder(final, staged):
    """Put `staged` in place of `final` (two renames; the old folder is deleted afterwards)."""
    old = f"{final}.old-{os.getpid()}"
    if os.path.exists(final):
        os.rename(final, old)
    os.rename(staged, final)
    shutil.rmtree(old, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_root", default=ROOT,
                        help="folder that receives data/demo and pretrained_weight/mt5-demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", type=int, default=0, metavar="N",
                        help="also draw the first N test samples' skeletons (data/demo/render/<name>.mp4)")
    args = parser.parse_args(argv)
    import utils  # here, as torch is everywhere in this file: importing make_demo's helpers stays light
    if args.render < 0:
        utils.fail(f"--render {args.render}: must be 0 (none) or a number of samples")
    utils.ensure_writable_dir(args.out_root, "--out_root")
    start = time.time()
    paths = build_demo(args.out_root, seed=args.seed)
    sizes = {phase: len(safe_load_labels(path)) for phase, path in paths["label_paths"].items()}
    total_bytes = sum(os.path.getsize(os.path.join(folder, name)) for key in ("demo_dir", "mt5_path")
                      for folder, _, names in os.walk(paths[key]) for name in names)
    print(f"demo built in {time.time() - start:.1f} s: samples {sizes}, {total_bytes / 2 ** 20:.1f} MiB")
    print(f"  labels + poses: {paths['demo_dir']}\n  tiny mT5:       {paths['mt5_path']}")
    for out in render_samples(paths, args.render):
        print(f"  rendered:       {out}")


def render_samples(paths, count):
    """Draw the first `count` test samples' skeletons (model's points enlarged) to demo_dir/render/<name>.mp4;
    returns the paths written."""
    import pose_render
    folder = os.path.join(paths["demo_dir"], "render")
    names = list(safe_load_labels(paths["label_paths"]["test"]))[:count]
    if names:
        os.makedirs(folder, exist_ok=True)
    written = []
    for name in names:
        out = os.path.join(folder, name + ".mp4")
        clip = pose_render.read_pose(os.path.join(paths["pose_dir"], name + ".pkl"))
        pose_render.render_clip([clip], out, fps=4, parts=True)  # 2-3 frames a gloss: slowed down to be seen
        written.append(out)
    return written


def safe_load_labels(path):
    from safe_pickle import safe_pickle_load
    with gzip.open(path, "rb") as f:
        return safe_pickle_load(f)


if __name__ == "__main__":
    main()

"""script/make_demo.py: deterministic, small, learnable-looking, and loading through the real-data code path."""
import gzip
import hashlib
import os
import types

import numpy as np
import pytest
import torch

import datasets
import make_demo
import safe_pickle


def labels_of(path):
    with gzip.open(path, "rb") as f:
        return safe_pickle.safe_pickle_load(f)


def digest_tree(folder):
    """{relative path: sha256} of every file under folder."""
    digests = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def demo_args(**overrides):
    values = dict(max_length=256, task="SLT", skip_bad_samples=False)
    values.update(overrides)
    return types.SimpleNamespace(**values)


def test_builder_is_deterministic(demo_root, tmp_path):
    again = make_demo.build_demo(str(tmp_path), seed=0)
    for key in ("demo_dir", "mt5_path"):
        first, second = digest_tree(demo_root[key]), digest_tree(again[key])
        assert first == second and len(first) > 3
    other_seed = make_demo.build_demo(str(tmp_path / "seed1"), seed=1)
    assert digest_tree(other_seed["pose_dir"]) != digest_tree(demo_root["pose_dir"])


def test_sizes_and_label_format(demo_root):
    sizes = {phase: len(labels_of(path)) for phase, path in demo_root["label_paths"].items()}
    assert sizes == make_demo.SAMPLES_PER_PHASE
    names = [name for path in demo_root["label_paths"].values() for name in labels_of(path)]
    assert len(set(names)) == len(names)
    assert sorted(os.listdir(demo_root["pose_dir"])) == sorted(name + ".pkl" for name in names)
    total = sum(os.path.getsize(os.path.join(parent, name)) for key in ("demo_dir", "mt5_path")
                for parent, _, files in os.walk(demo_root[key]) for name in files)
    assert total < 30 * 2 ** 20
    label = next(iter(labels_of(demo_root["label_paths"]["train"]).values()))
    assert set(label) == {"name", "gloss", "text", "video_path"} and isinstance(label["gloss"], list)
    assert label["video_path"] == label["name"] + ".mp4"


def test_sentences_are_real_csl_daily_sentences_of_frequent_glosses(demo_root):
    real = labels_of(make_demo.SOURCE_LABELS)
    real_pairs = {(tuple(v["gloss"]), v["text"]) for v in real.values()}
    phases = {phase: labels_of(path) for phase, path in demo_root["label_paths"].items()}
    glosses = set()
    for labels in phases.values():
        for label in labels.values():
            assert (tuple(label["gloss"]), label["text"]) in real_pairs
            lo, hi = make_demo.GLOSSES_PER_SENTENCE
            assert lo <= len(label["gloss"]) <= hi
            glosses.update(label["gloss"])
    assert 20 <= len(glosses) <= make_demo.NUM_GLOSSES
    train_texts = {label["text"] for label in phases["train"].values()}
    train_glosses = {g for label in phases["train"].values() for g in label["gloss"]}
    unseen = [label for phase in ("dev", "test") for label in phases[phase].values() if label["text"] not in train_texts]
    assert unseen, "dev/test should hold some sentences never seen in training"
    assert all(set(label["gloss"]) <= train_glosses for label in unseen)


def test_pose_files_look_like_rtmpose_output(demo_root):
    lengths, low_confidence_hand_frames, multi_person_files = [], 0, 0
    for name in sorted(os.listdir(demo_root["pose_dir"])):
        data = safe_pickle.safe_pickle_load(os.path.join(demo_root["pose_dir"], name))
        assert set(data) == {"keypoints", "scores"} and isinstance(data["keypoints"], list)
        people = {k.shape[0] for k in data["keypoints"]}
        multi_person_files += max(people) > 1
        for keypoints, scores in zip(data["keypoints"], data["scores"]):
            assert keypoints.shape[1:] == (133, 2) and scores.shape == keypoints.shape[:2]
            assert keypoints.dtype == np.float32 and scores.dtype == np.float32
            assert 0.0 <= keypoints.min() and keypoints.max() <= 1.0
            low_confidence_hand_frames += scores[0, 91:112].max() < 0.3
        lengths.append(len(data["keypoints"]))
    lo, hi = make_demo.FRAMES_PER_GLOSS
    min_glosses, max_glosses = make_demo.GLOSSES_PER_SENTENCE
    assert lo * min_glosses <= min(lengths) and max(lengths) <= hi * max_glosses and 8 <= np.mean(lengths) <= 24
    assert low_confidence_hand_frames > 50 and multi_person_files > 0


def test_demo_loads_through_the_real_data_code_path(demo_root):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(demo_root["mt5_path"])
    collate = datasets.PoseCollator(tokenizer, "Demo")
    for phase in ("train", "dev", "test"):
        dataset = datasets.build_dataset("Demo", phase, demo_args(), label_path=demo_root["label_paths"][phase],
                                         pose_dir=demo_root["pose_dir"])
        assert len(dataset) == make_demo.SAMPLES_PER_PHASE[phase]
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=phase == "train", collate_fn=collate)
        batch = next(iter(loader))
        assert len(batch["name"]) == 8 and batch["num_skipped"] == 0
        assert batch["pose"]["body"].shape[:2] == batch["pose_mask"].shape
        for part, indices in datasets.PART_INDICES.items():
            values = batch["pose"][part]
            assert values.shape[2:] == (len(indices), 3) and torch.isfinite(values).all()
            assert values[..., :2].abs().max() <= 1.0 and values[..., :2].abs().max() > 0.1
        assert batch["prompt_ids"][0].tolist() == tokenizer(datasets.prompt_for("Demo")).input_ids
        assert tokenizer.unk_token_id not in batch["labels"].flatten().tolist()
        decoded = [tokenizer.decode(row[row != -100], skip_special_tokens=True) for row in batch["labels"]]
        assert decoded == batch["text"]


def test_config_points_demo_at_the_built_folders():
    import config
    assert config.train_label_paths["Demo"].endswith(os.path.join("data", "demo", "labels.train"))
    assert config.pose_dirs["Demo"].endswith(os.path.join("data", "demo", "pose_format"))
    assert config.demo_mt5_path.endswith(os.path.join("pretrained_weight", "mt5-demo"))
    assert "Demo" in config.chinese_datasets


def test_tokenizer_follows_t5_conventions_and_round_trips(demo_root):
    from transformers import AutoTokenizer, T5Tokenizer
    texts = sorted({label["text"] for path in demo_root["label_paths"].values() for label in labels_of(path).values()})
    for tokenizer_class in (AutoTokenizer, T5Tokenizer):
        tokenizer = tokenizer_class.from_pretrained(demo_root["mt5_path"])
        assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
        assert tokenizer.bos_token_id is None
        for text in texts + list(datasets.PROMPTS.values()):
            ids = tokenizer(text).input_ids
            assert ids[-1] == 1 and ids.count(1) == 1 and 2 not in ids and 0 not in ids
            assert tokenizer.decode(ids, skip_special_tokens=True) == text.strip()


def test_tiny_mt5_matches_its_tokenizer(tiny_mt5_path):
    from transformers import AutoTokenizer, MT5ForConditionalGeneration
    tokenizer = AutoTokenizer.from_pretrained(tiny_mt5_path)
    model = MT5ForConditionalGeneration.from_pretrained(tiny_mt5_path)
    config = model.config
    assert config.vocab_size == len(tokenizer)
    assert (config.d_model, config.d_kv, config.num_heads, config.d_ff) == (128, 32, 4, 256)
    assert (config.num_layers, config.num_decoder_layers) == (2, 2)
    assert (config.decoder_start_token_id, config.pad_token_id, config.eos_token_id) == (0, 0, 1)
    assert config.dropout_rate == pytest.approx(0.1)
    # untied like real mT5 (transformers 5 forces the config flag to True but keeps saved, differing weights apart)
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert not torch.equal(model.lm_head.weight, model.shared.weight)
    assert os.path.exists(os.path.join(tiny_mt5_path, "model.safetensors"))
    batch = tokenizer(["你好！"], return_tensors="pt")
    out = model(input_ids=batch.input_ids, labels=batch.input_ids)
    assert torch.isfinite(out.loss)


def test_build_tokenizer_and_mt5_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_demo.build_tokenizer_and_mt5(["你好！", "我想喝水。"], str(tmp_path / "m"), seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_command_line_builds_into_out_root(tmp_path, capsys):
    make_demo.main(["--out_root", str(tmp_path)])
    out = capsys.readouterr().out
    assert "demo built" in out and f"'train': {make_demo.SAMPLES_PER_PHASE['train']}" in out
    assert os.path.isfile(tmp_path / "data" / "demo" / "labels.dev")
    assert os.path.isfile(tmp_path / "pretrained_weight" / "mt5-demo" / "config.json")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit):  # was a NotADirectoryError traceback
        make_demo.main(["--out_root", str(a_file / "demo")])
    assert capsys.readouterr().err == f"error: --out_root {a_file / 'demo'} cannot be written (Not a directory): " \
                                      "choose another --out_root\n"

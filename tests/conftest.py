"""Shared fixtures: the demo (tiny mT5, tokenizer, CSL-Daily-format data) built once per test session."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for folder in (ROOT, os.path.join(ROOT, "script")):
    if folder not in sys.path:
        sys.path.insert(0, folder)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """Build the whole demo into a temporary folder; returns its paths (mt5_path, label_paths, pose_dir, ...)."""
    import make_demo
    out_root = str(tmp_path_factory.mktemp("demo"))
    # Interim: tokenizer + tiny mT5 only, until build_demo writes the pose files too.
    sentences = make_demo.choose_sentences()
    mt5_path = os.path.join(out_root, "pretrained_weight", "mt5-demo")
    make_demo.build_tokenizer_and_mt5([text for _, text in sentences], mt5_path, seed=0)
    paths = {"mt5_path": mt5_path, "label_paths": {}, "pose_dir": None}
    paths["out_root"] = out_root
    return paths


@pytest.fixture(scope="session")
def tiny_mt5_path(demo_root):
    """Folder of the demo's tiny mT5 and its tokenizer (from_pretrained works for both)."""
    return demo_root["mt5_path"]

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
    paths = make_demo.build_demo(out_root, seed=0)
    paths["out_root"] = out_root
    return paths


@pytest.fixture(scope="session")
def tiny_mt5_path(demo_root):
    """Folder of the demo's tiny mT5 and its tokenizer (from_pretrained works for both)."""
    return demo_root["mt5_path"]

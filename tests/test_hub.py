"""Hugging Face Hub ids (`--mt5_path google/mt5-base`, `--finetune org/model`) resolve through huggingface_hub's
cache as transformers' from_pretrained does; offline, on a cache each test builds in its own HF_HOME."""
import os
import shutil

import huggingface_hub
import pytest

import model_io
import models
from e2e import base_args
from in_process import fine_tuning_refuses

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty offline hub cache (HF_HOME/hub) and a function that puts a folder's files into it as repository
    `repo_id`'s snapshot, in huggingface_hub's documented layout: models--ORG--NAME/snapshots/REV/FILES and
    models--ORG--NAME/refs/main holding REV."""
    cache = tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # no local folder of a test's Hub id's name unless the test makes one

    def put(repo_id, folder):
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(folder, repo / "snapshots" / REVISION)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(REVISION)
        return str(repo / "snapshots" / REVISION)

    return put


def test_an_mt5_hub_id_loads_from_the_cache_offline(hub_cache, tiny_mt5_path):
    snapshot = hub_cache("org/tiny-mt5", tiny_mt5_path)
    tokenizer, mt5 = models.load_mt5("org/tiny-mt5")
    assert os.path.samefile(mt5.config._name_or_path, snapshot)
    assert tokenizer("hello").input_ids[-1] == tokenizer.eos_token_id


def test_a_local_folder_of_the_same_name_wins(hub_cache, tiny_mt5_path, tmp_path):
    hub_cache("org/tiny-mt5", tiny_mt5_path)
    shutil.copytree(tiny_mt5_path, tmp_path / "org" / "tiny-mt5")
    assert model_io.resolve_hub_id("org/tiny-mt5", "--mt5_path") == "org/tiny-mt5"


def test_a_hub_mt5_with_a_pickle_that_runs_code_is_refused(hub_cache, tiny_mt5_path, tmp_path):
    """The snapshot is checked as a local --mt5_path is: pickled weights hold tensors only."""
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_mt5_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n(S'true'\ntR.")
    hub_cache("org/pickled-mt5", folder)
    with pytest.raises(model_io.ModelFileError, match="pytorch_model.bin"):
        models.load_mt5("org/pickled-mt5")


def test_a_model_folder_hub_id_is_checked_like_a_local_folder(hub_cache, tmp_path):
    """A snapshot is read as a local folder would be: a model folder's config.json lists every file's SHA-256."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"format": "geo-sign-model", "files": {"model.safetensors": "0"}}')
    (folder / "model.safetensors").write_bytes(b"not the listed file")
    hub_cache("org/geo-sign-model", folder)
    with pytest.raises(model_io.ModelFileError, match="does not match its SHA-256"):
        model_io.read_model("org/geo-sign-model")


@pytest.mark.parametrize("flag", ("--mt5_path", "--finetune"))
def test_a_hub_id_missing_offline_is_one_error_line(hub_cache, demo_root, tmp_path, capsys, flag):
    line, _, _ = fine_tuning_refuses(capsys, [*base_args(demo_root, tmp_path / "out"), "--eval", flag, "org/absent"])
    assert f"{flag} org/absent" in line and "HF_HUB_OFFLINE=1" in line and "hf download" in line

"""preflight.check_step_memory: a training step too large for the machine is refused before training, in one line
naming the flags that lower it (was: killed by the kernel at 23.6 GB without a word)."""
import json
import sys
from types import SimpleNamespace

import pytest

import preflight
from e2e import check_ok, run

# The released model's mT5 (google/mt5-base), as its config.json gives it.
MT5_BASE = {"num_heads": 12, "d_model": 768, "d_kv": 64, "d_ff": 2048, "num_layers": 12}

MEASURE = """
import argparse, json, resource, sys, torch, preflight
from losses import training_loss
from datasets import PART_INDICES, PoseCollator
from models import Uni_Sign
mt5_path, frames = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = Uni_Sign(argparse.Namespace(mt5_path=mt5_path)).train()
collate = PoseCollator(model.mt5_tokenizer, "Demo")
def batch(length):
    return collate([{"name": "a", "text": "a", "pose": {part: torch.randn(length, len(nodes), 3)
                                                       for part, nodes in PART_INDICES.items()}}])
training_loss(model, batch(4))["loss"].backward()  # the gradients' and the allocator's own memory, before the peak is read
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
training_loss(model, batch(frames))["loss"].backward()
with open(mt5_path + "/config.json") as f:
    estimate = preflight.step_activation_bytes(1, frames, json.load(f))
print(json.dumps({"measured": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024,
                  "estimated": estimate}))
"""


@pytest.mark.slow
def test_the_estimate_matches_a_measured_step(tiny_mt5_path):
    """The demo model's forward + backward on one 128-frame video (fp32, CPU): the peak memory the step added
    (the process's maximum resident size) is within 25 % of step_activation_bytes."""
    result = check_ok(run([sys.executable, "-c", MEASURE, tiny_mt5_path, "128"]))
    sizes = json.loads(result.stdout.strip().splitlines()[-1])
    assert sizes["estimated"] > 100 * 2**20  # large enough to stand out of the process's other memory
    assert 0.75 < sizes["measured"] / sizes["estimated"] < 1.25, sizes


def flags(tmp_path, **overrides):
    (tmp_path / "config.json").write_text(json.dumps(MT5_BASE))
    return SimpleNamespace(**{"mt5_path": str(tmp_path), "batch_size": 1, "max_length": 25000, "dtype": "bf16",
                              **overrides})


def test_a_step_too_large_is_refused_naming_the_flags(tmp_path, capsys):
    """--max_length 25000 on a 20,000-frame video with mt5-base: the attention alone wants ~0.4 TB; refused in one
    line. The same video cut to the default 256 frames fits in 24 GiB."""
    with pytest.raises(SystemExit):
        preflight.check_step_memory(flags(tmp_path), longest_frames=20000, available=24 * 2**30)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: a training step on --batch_size 1 videos "
                                                                 "of 20000 frames")
    assert "more than the 24.0 GiB available" in err and "lower --max_length" in err and "--batch_size" in err
    preflight.check_step_memory(flags(tmp_path, max_length=256), longest_frames=20000, available=24 * 2**30)
    needed = preflight.step_activation_bytes(8, 256, MT5_BASE, 2)
    assert 2**30 < needed < 24 * 2**30  # the paper's batch of 8 (bf16) fits a GPU, as it does


def test_available_memory_is_shared_by_the_ranks_of_a_node(monkeypatch):
    alone = preflight.available_memory_bytes()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    shared = preflight.available_memory_bytes()
    assert alone > 0 and abs(shared - alone / 4) < 0.05 * alone  # MemAvailable moves a little in between

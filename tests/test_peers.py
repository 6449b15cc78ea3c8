"""peers.py: a rank whose peer died says which one, in one line, and how the run continues."""
import os
import signal
import socket
import sys

import pytest

import peers
from e2e import start_ranks

# Two ranks (gloo, as the launcher starts them) in fine_tuning.run, with a main() that stands for training: rank 1's
# process ends (killed, as the kernel kills a rank out of memory) while rank 0 waits in an all-reduce.
ONE_RANK_DIES = """
import os, signal, sys, torch, torch.distributed as dist, fine_tuning, peers, utils
def main(args):
    utils.init_distributed()
    peers.record_peers()  # as fine_tuning.main does
    total = torch.ones(1)
    dist.all_reduce(total)
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    for _ in range(3):
        dist.all_reduce(total)
fine_tuning.main = main
fine_tuning.run(fine_tuning.get_args_parser().parse_args(sys.argv[1:]))
"""


@pytest.mark.parametrize("saved", [True, False])
def test_a_rank_that_dies_is_named_with_how_to_resume(tmp_path, saved):
    """Was gloo's RuntimeError traceback ("Connection reset by peer ... GLHF!") on rank 0."""
    if saved:  # a run that has saved epoch 0: --resume continues from it
        (tmp_path / "deepspeed" / "epoch0").mkdir(parents=True)
        (tmp_path / "deepspeed" / "latest").write_text("epoch0")
    args = ["--output_dir", str(tmp_path)]
    ranks = start_ranks([[sys.executable, "-c", ONE_RANK_DIES, *args]] * 2)
    results = [(proc.wait(timeout=120), *proc.communicate()) for proc in ranks]
    assert results[1][0] == -signal.SIGKILL
    code, _, err = results[0]
    assert code == 1, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith(f"error: rank 1 (pid {ranks[1].pid}) of this run died, so rank 0 stops too")
    if saved:
        assert lines[0].endswith("then continue with --resume (epoch 0 is the last resumable one)")
    else:
        assert lines[0].endswith("no epoch was saved, so nothing resumes")


def test_a_peer_on_another_host_is_a_peer_process(monkeypatch):
    """A rank of another host cannot be checked from here: the line says that a peer process died, and why."""
    monkeypatch.setattr(peers, "PEERS", [(socket.gethostname(), os.getpid()), ("elsewhere", 1)])
    monkeypatch.setattr(peers.utils, "world_size", lambda: 2)
    monkeypatch.setattr(peers.utils, "rank", lambda: 0)
    err = RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error [10.0.0.2]:8850: Connection reset by peer.")
    assert peers.is_peer_death(err) and not peers.is_peer_death(RuntimeError("shape mismatch"))
    assert peers.dead_ranks(wait_s=0) == []
    monkeypatch.setattr(peers, "dead_ranks", lambda: [])  # without the wait for a dying process
    assert peers.peer_death_message(err) == (
        "a peer process of this run died (Connection reset by peer in a collective), so rank 0 stops too")
    monkeypatch.setattr(peers.utils, "world_size", lambda: 1)  # a one-rank run has no peers
    assert not peers.is_peer_death(err)

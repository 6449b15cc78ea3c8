"""Several nodes: two "nodes" on this machine, one process each, started the way a cluster starts them
(script/launch.sh -> deepspeed --hostfile ... --no_ssh --node_rank N), gloo on CPU."""
import os
import subprocess
import sys

import pytest
import torch

from e2e import (ROOT, TINY_EVAL_SAMPLES, assert_scores_like_one_process, base_args, clean_env, free_port,
                 read_log, read_predictions)

VENV_BIN = os.path.dirname(sys.executable)  # where the deepspeed launcher is


def launch(script_args, threads=1, **env):
    """script/launch.sh's launch() on fine_tuning.py, as train.sh calls it, with launcher settings from env."""
    env = clean_env(threads, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""), **env)
    command = ['. script/launch.sh && launch fine_tuning.py 1 "$@"', "launch", *script_args]
    return subprocess.Popen(["bash", "-c", *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_nodes_train_once_and_score_like_one_process(tiny_demo, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n", encoding="utf-8")
    out = tmp_path / "two_nodes"  # both nodes write here: the shared file system a cluster needs
    nodes_env = dict(HOSTFILE=str(hostfile), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    nodes = [launch(base_args(tiny_demo, out, epochs=1, steps=2), NODE_RANK=str(rank), **nodes_env)
             for rank in (0, 1)]
    results = []
    for node in nodes:
        try:
            results.append(node.communicate(timeout=600) + (node.returncode,))
        finally:
            node.kill()
    for stdout, stderr, returncode in results:
        assert returncode == 0, f"exit {returncode}\nSTDOUT:\n{stdout[-3000:]}\nSTDERR:\n{stderr[-5000:]}"
    for rank, (stdout, stderr, _) in enumerate(results):  # each launcher started only its node's process
        assert f"nnodes=2, num_local_procs=1, node_rank={rank}" in stdout + stderr
    assert "2 process(es)" in results[0][0]
    assert "2 process(es)" not in results[1][0]  # node 1's rank prints nothing of its own
    # written once, by global rank 0 only (not once per node): one log line, one prediction per sample
    assert [r["epoch"] for r in read_log(out)] == [0]
    assert len(read_predictions(out / "dev_tmp_pres.txt")) == TINY_EVAL_SAMPLES
    assert [name for name in os.listdir(out / "deepspeed") if name.startswith("epoch")] == ["epoch0"]
    assert not [name for name in os.listdir(out) if ".tmp-" in name]
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] == 2
    assert_scores_like_one_process(tiny_demo, out, tmp_path / "one")


def test_launch_refuses_node_settings_without_a_hostfile(tmp_path):
    node = launch(["--help"], NUM_NODES="2")
    stdout, stderr = node.communicate(timeout=60)
    assert node.returncode == 1 and stderr.startswith("error: NUM_NODES") and "HOSTFILE" in stderr
    node = launch(["--help"], HOSTFILE=str(tmp_path / "missing"))
    stdout, stderr = node.communicate(timeout=60)
    assert node.returncode == 1 and "missing does not exist" in stderr

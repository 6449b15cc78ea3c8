"""Helpers for end-to-end tests that run fine_tuning.py / pretraining.py as a user does (in a process of their own:
a child of fork_server.py, which has done the imports, or a fresh interpreter).

The fixtures they go with, small_demo and tiny_demo, are in conftest.py.
"""
import atexit
import json
import os
import socket
import subprocess
import sys
import tempfile

import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_EVAL_SAMPLES = 6  # dev and test samples of the tiny_demo fixture
# Threads for one test's work: the machine's cores shared among pytest-xdist's workers (GNU OpenMP threads spin
# while they wait, so more threads than cores make every test many times slower, not a little).
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def base_args(demo, output_dir, epochs=2, steps=4):
    return ["--dataset", "Demo", "--task", "SLT", "--mt5_path", demo["mt5_path"], "--pose_dir", demo["pose_dir"],
            "--train_label_path", demo["label_paths"]["train"], "--dev_label_path", demo["label_paths"]["dev"],
            "--test_label_path", demo["label_paths"]["test"], "--output_dir", str(output_dir),
            "--epochs", str(epochs), "--quick_break", str(steps), "--batch_size", "4", "--lr", "1e-3",
            "--warmup-epochs", "0", "--num_workers", "0", "--num_beams", "2", "--max_tgt_len", "20",
            "--use_hyperbolic", "--hyp_text_cmp", "token", "--hyp_text_emb_src", "decoder"]


def clean_env(threads=THREADS, **extra):
    env = {k: v for k, v in os.environ.items() if k not in utils.LAUNCH_ENV and not k.startswith("WANDB")}
    env.update({"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled", **extra})
    return {k: v for k, v in env.items() if v is not None}


def run(cmd, timeout=600, threads=THREADS, fresh=False, **env):
    """subprocess.run(cmd) from the repository root with clean_env(threads, **env), output captured as text.
    `python SCRIPT ...` and `python -c CODE ...` go through the fork server (the same run without the ~8 s of
    imports); fresh=True starts a new interpreter, for a test about what happens while Python starts."""
    if not fresh and len(cmd) > 1 and cmd[0] == sys.executable and (cmd[1] == "-c" or cmd[1].endswith(".py")):
        process = start(cmd, threads, **env)
        stdout, stderr = process.communicate(timeout)
        return subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)
    return subprocess.run(cmd, cwd=ROOT, env=clean_env(threads, **env), capture_output=True, text=True,
                          timeout=timeout)


class ForkServer:
    """The test session's fork_server.py process (started on first use, ended with the session)."""

    def __init__(self):
        self.log = tempfile.NamedTemporaryFile(prefix="fork-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "fork_server.py")], cwd=ROOT,
                                        env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        atexit.register(self.close)

    def ask(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline()
        if not reply:
            with open(self.log.name, encoding="utf-8", errors="replace") as f:
                raise RuntimeError(f"the fork server ended:\n{f.read()[-3000:]}")
        return json.loads(reply)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        os.unlink(self.log.name)


class ForkedProcess:
    """A command running as a child of the fork server, used like subprocess.Popen with captured text output:
    pid, send_signal, wait, communicate."""

    def __init__(self, server, cmd, env):
        self.server, self.args = server, cmd
        self.folder = tempfile.TemporaryDirectory(prefix="fork-run-")
        self.outputs = [os.path.join(self.folder.name, name) for name in ("stdout", "stderr")]
        for path in self.outputs:
            open(path, "w").close()
        self.pid = server.ask({"op": "start", "argv": [str(a) for a in cmd[1:]], "cwd": ROOT, "env": env,
                               "stdout": self.outputs[0], "stderr": self.outputs[1]})["pid"]
        self.returncode = None

    def send_signal(self, sig):
        if self.returncode is None:
            os.kill(self.pid, sig)

    def wait(self, timeout=600):
        if self.returncode is None:
            reply = self.server.ask({"op": "wait", "pid": self.pid, "timeout": timeout})
            self.returncode = reply["returncode"]
            if reply["timed_out"]:
                raise subprocess.TimeoutExpired(self.args, timeout, *self.read())
        return self.returncode

    def read(self):
        return tuple(open(path, encoding="utf-8", errors="replace").read() for path in self.outputs)

    def communicate(self, timeout=600):
        self.wait(timeout)
        output = self.read()
        self.folder.cleanup()
        return output


def start(cmd, threads=THREADS, **env):
    """`python SCRIPT ...` or `python -c CODE ...` started as a child of the fork server (see run), not waited for."""
    return ForkedProcess(_fork_server(), cmd, clean_env(threads, **env))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(commands, one_node=True):
    """One command per rank, started as DeepSpeed's launcher starts ranks (RANK, LOCAL_RANK, WORLD_SIZE,
    LOCAL_WORLD_SIZE, MASTER_ADDR/PORT; gloo on CPU, a thread each): on one node, or each on a "node" of its own
    (LOCAL_RANK 0 everywhere). The launcher itself is tested in test_multinode.py and test_errors_while_training.py."""
    port, world = free_port(), len(commands)
    return [start(cmd, threads=1, RANK=str(rank), LOCAL_RANK=str(rank if one_node else 0), WORLD_SIZE=str(world),
                  LOCAL_WORLD_SIZE=str(world if one_node else 1), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            for rank, cmd in enumerate(commands)]


_server = []


def _fork_server():
    if not _server or _server[0].process.poll() is not None:
        _server[:] = [ForkServer()]
    return _server[0]


def check_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"
    return result


def read_log(output_dir):
    with open(os.path.join(output_dir, "log.txt"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_predictions(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def assert_scores_like_one_process(demo, run_dir, eval_dir):
    """The multi-process run in run_dir (one epoch) logged the dev and test scores, and wrote the prediction
    files, that one plain process evaluating its checkpoint.pth gets: same scores, same lines in the same order."""
    log = read_log(run_dir)
    args = base_args(demo, eval_dir) + ["--eval", "--finetune", str(run_dir / "checkpoint.pth")]
    result = check_ok(run([sys.executable, "fine_tuning.py", *args]))
    for split in ("dev", "test"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{split}:"))
        assert f"bleu4 {log[0][f'{split}_bleu4']:.2f}" in line and f"rouge {log[0][f'{split}_rouge']:.2f}" in line
        gathered = read_predictions(run_dir / f"{split}_tmp_pres.txt")
        assert gathered == read_predictions(eval_dir / f"{split}_tmp_pres.txt")  # same order, none lost or doubled

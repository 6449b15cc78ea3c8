"""Runs `python SCRIPT ARGS...` and `python -c CODE ARGS...` for the tests without paying for the imports each time.

    python tests/fork_server.py    # then one JSON request a line on stdin, one JSON reply a line on stdout

A `python fine_tuning.py ...` run spends about 8 s on imports on these 2 cores (torch, transformers' mT5,
DeepSpeed with the Muon module and torch.compile's inductor it imports, matplotlib); the end-to-end tests start
dozens. This server imports them once, then forks a child per request. The child is what the interpreter
would have been: its own working folder, environment, sys.argv, sys.path[0], stdin from /dev/null, stdout and
stderr into the files the request names, the script run as `__main__`, exit handlers run and the exit code
returned; only the imports (and transformers' table of weight renamings, pure Python) were done before the
fork. So the notices third-party packages print while being imported are not in a child's output: a test
about those runs a fresh interpreter (e2e.run(..., fresh=True)).

The server itself must never run a parallel torch operation: GNU OpenMP's thread pool does not survive fork
(a child of a process that used it hangs at its first matrix product), so it only imports.

Requests, one at a time, each answered at once but for a wait:
  {"op": "start", "argv": [script or "-c", ...], "cwd": ..., "env": {...}, "stdout": path, "stderr": path}
      -> {"pid": n}    (the child runs on; the test may signal it)
  {"op": "wait", "pid": n, "timeout": s}
      -> {"returncode": n, "timed_out": bool}    (killed by a signal: minus its number; on a timeout the
                                                   child's process group is killed)
"""
import atexit
import importlib
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# What a run imports later than `import fine_tuning` does: transformers' mT5 and tokenizer modules (lazy
# attributes, 3 s), DeepSpeed's Muon module (its ZeRO optimizer check imports it, and torch.compile's inductor
# with it: 3 s), matplotlib for the training curves, the metrics, safetensors for model folders.
LAZY_IMPORTS = ("transformers.models.mt5.modeling_mt5", "transformers.models.t5.tokenization_t5",
                "transformers.models.t5.tokenization_t5_fast", "deepspeed.runtime.zero.muon.muon_optimizer",
                "matplotlib.pyplot", "SLRT_metrics", "safetensors.torch")


def preload():
    """Import what fine_tuning.py, pretraining.py and the scripts import, without running any of it."""
    import utils
    utils.silence_known_notices()  # before DeepSpeed's import, as the commands do
    utils.use_environment_extension_cache()
    import deepspeed  # noqa: F401
    import fine_tuning  # noqa: F401  (models, hyperbolic, geoopt, engine, model_io, datasets with it)
    import matplotlib
    matplotlib.use("Agg")  # as utils.plot_curves does: no screen here
    for name in LAZY_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:  # another version's layout: the child imports what it needs, as usual
            pass
    warm_weight_renaming_table()


def warm_weight_renaming_table():
    """transformers compiles about a thousand regular expressions, its table of weight renamings for every model
    type, on a process's first from_pretrained (0.6 s here) and keeps it in a module global: build it once here,
    pure Python, so that every child starts with it as a fresh process would have it after its first load."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    except ImportError:  # a version without the table: nothing to warm
        return
    get_checkpoint_conversion_mapping("mt5")


def exit_code(stop):
    """The process exit code of a SystemExit, as the interpreter computes it."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def child(request):
    """In the forked child: become the requested interpreter run, then leave with its exit code."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, so that a timeout also ends its DataLoader workers
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
                                (2, request["stderr"], os.O_WRONLY | os.O_TRUNC)):
            os.dup2(os.open(path, flags), fd)
        import torch
        torch.set_num_threads(int(request["env"].get("OMP_NUM_THREADS", os.cpu_count() or 1)))
        first, *rest = request["argv"]
        if first == "-c":
            code_text, *rest = rest
            sys.argv, sys.path[0] = ["-c", *rest], ""
            exec(compile(code_text, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            script = os.path.abspath(first)
            sys.argv, sys.path[0] = [first, *rest], os.path.dirname(script)
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = exit_code(stop)
    except BaseException:  # what the interpreter does with an uncaught exception: print it, exit 1
        traceback.print_exc()
        code = 1
    finally:
        try:
            for thread in threading.enumerate():  # the interpreter waits for non-daemon threads at exit
                if thread is not threading.main_thread() and not thread.daemon:
                    thread.join()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def wait(pid, timeout):
    """The child's exit code, or minus the number of the signal that ended it; (code, timed_out)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL, True
        time.sleep(0.02)


def serve():
    replies = os.fdopen(os.dup(1), "w")  # children replace fd 1; replies keep their own copy of the pipe
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                replies.close()
                child(request)
            reply = {"pid": pid}
        else:  # "wait"
            code, timed_out = wait(request["pid"], request["timeout"])
            reply = {"returncode": code, "timed_out": timed_out}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    preload()
    serve()

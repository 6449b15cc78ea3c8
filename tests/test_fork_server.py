"""tests/fork_server.py: a forked child behaves as `python ...` would (argv, path, environment, output, exit code)."""
import signal
import subprocess
import sys

import pytest

import e2e

SHOW = """
import os, sys, torch
print("argv", sys.argv[1:], "path0", repr(sys.path[0]), "cwd", os.getcwd() == sys.argv[1])
print("env", os.environ.get("FORK_TEST"), "threads", torch.get_num_threads(), "main", __name__)
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[2]))
"""


def test_a_child_gets_the_argv_environment_output_and_exit_code_of_an_interpreter():
    result = e2e.run([sys.executable, "-c", SHOW, e2e.ROOT, "3"], threads=1, FORK_TEST="yes")
    assert result.returncode == 3
    assert result.stdout.splitlines() == [f"argv ['{e2e.ROOT}', '3'] path0 '' cwd True",
                                          "env yes threads 1 main __main__"]
    assert result.stderr == "to stderr\n"
    fresh = e2e.run([sys.executable, "-c", SHOW, e2e.ROOT, "3"], threads=1, FORK_TEST="yes", fresh=True)
    assert (fresh.returncode, fresh.stdout, fresh.stderr) == (result.returncode, result.stdout, result.stderr)


def test_a_script_runs_as_main_with_its_folder_first_on_the_path(tmp_path):
    script = tmp_path / "show.py"
    script.write_text("import sys\nprint(__name__, sys.path[0], sys.argv)\nraise ValueError('boom')\n")
    result = e2e.run([sys.executable, str(script), "--flag"])
    assert result.returncode == 1
    assert result.stdout == f"__main__ {tmp_path} ['{script}', '--flag']\n"
    assert "Traceback" in result.stderr and result.stderr.rstrip().endswith("ValueError: boom")


def test_a_child_that_runs_too_long_is_killed_and_the_server_carries_on():
    with pytest.raises(subprocess.TimeoutExpired):
        e2e.run([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], timeout=1)
    assert e2e.run([sys.executable, "-c", "print('next')"]).stdout == "next\n"


def test_a_started_child_runs_on_until_signalled():
    process = e2e.start([sys.executable, "-c", "import time; time.sleep(60)"])
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL  # not a TimeoutExpired after 30 s
    assert process.communicate() == ("", "")

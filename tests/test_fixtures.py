"""conftest.built_once: what several test files read (the demo, shared training runs) is built once per test
session, also when pytest-xdist runs the tests in several workers."""
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import e2e
from conftest import built_once

def ask_for_the_shared_folder(session):
    """What one pytest-xdist worker does (run as `python tests/test_fixtures.py SESSION`, tests/ being the script's
    folder): ask for the folder "shared" that another worker asks for too; its own temporary folder is below the
    session's. Prints what built_once returned."""
    import time
    worker = os.environ["PYTEST_XDIST_WORKER"]
    (session / worker).mkdir()

    def build(folder):
        (folder / worker).write_text("built here")
        time.sleep(1)  # the other worker asks meanwhile
        return {"by": worker, "folder": str(folder)}

    print(json.dumps(built_once(SimpleNamespace(getbasetemp=lambda: session / worker), "shared", build)))


def test_two_workers_asking_at_once_get_one_build(tmp_path):
    workers = [e2e.start([sys.executable, os.path.abspath(__file__), str(tmp_path)], PYTEST_XDIST_WORKER=f"gw{i}")
               for i in (0, 1)]
    results = [worker.communicate() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], results
    answers = [json.loads(stdout) for stdout, _ in results]
    assert answers[0] == answers[1] and answers[0]["folder"] == str(tmp_path / "shared")  # the session's folder
    assert os.listdir(tmp_path / "shared") == [answers[0]["by"]]  # built by one of them, once


def test_a_failed_build_is_started_again_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    (tmp_path / "gw0").mkdir()
    factory = SimpleNamespace(getbasetemp=lambda: tmp_path / "gw0")

    def broken(folder):
        (folder / "half-written").write_text("")
        raise RuntimeError("the run failed")
    with pytest.raises(RuntimeError):
        built_once(factory, "run", broken)
    assert built_once(factory, "run", lambda folder: sorted(os.listdir(folder))) == []
    assert built_once(factory, "run", broken) == []  # built: not built again


if __name__ == "__main__":
    ask_for_the_shared_folder(Path(sys.argv[1]))

#!/usr/bin/env bash
# Set up (.venv) and run the whole test suite. Extra arguments go to pytest, e.g. -m "not slow".
# The tests run in TEST_WORKERS pytest-xdist processes (default: one per core, at most 4), each with the
# machine's cores shared out among them (tests/e2e.py: THREADS); TEST_WORKERS=0 runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash script/setup.sh
cores=$(nproc 2>/dev/null || echo 1)
workers=${TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
exec .venv/bin/python -m pytest tests -n "$workers" --dist worksteal "$@"

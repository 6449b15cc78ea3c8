#!/usr/bin/env bash
# The first look at a GPU machine (script/gpu_check.py says what it checks): one JSON summary, last line.
#   bash script/gpu_check.sh [--tiny] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then . .venv/bin/activate; fi
exec python script/gpu_check.py "$@"

#!/usr/bin/env bash
# Create .venv and install everything the project needs. Safe to run again: it only installs what changed.
#   bash script/setup.sh            # CPU build of PyTorch where there is no NVIDIA GPU, CUDA build otherwise
# Every package is installed at the version in constraints.txt (the tested ones), torch's included; then the
# project itself, editable (pyproject.toml), so that script/ and tests/ import its modules from this checkout.
#   TORCH_CPU_VERSION=2.13.0 ...    # which CPU build to take (PyTorch's CPU wheel index, or a local +cpu wheel;
#                                   # default: constraints.txt's torch)
# One line per step here; pip's full output goes to .venv/setup.log (its errors are shown when a step fails).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-$(sed -n 's/^torch==//p' constraints.txt)}
RTMLIB=rtmlib==0.0.16  # without its dependencies: see requirements.txt
export PIP_RETRIES=${PIP_RETRIES:-1} PIP_TIMEOUT=${PIP_TIMEOUT:-20} PIP_DISABLE_PIP_VERSION_CHECK=1
LOG=.venv/setup.log

# step "WHAT" COMMAND...: say what is being done in one line and run COMMAND with its output in the log; when it
# fails, show its errors (pip's ERROR lines, else its last lines) and where the whole log is, and stop.
step() {
    local what=$1 part
    shift
    echo "setup: $what"
    part=$(mktemp)
    if "$@" >"$part" 2>&1; then
        cat "$part" >>"$LOG"
        rm -f "$part"
        return
    fi
    cat "$part" >>"$LOG"
    echo "error: setup failed while $what; its errors (the whole log: $LOG):" >&2
    { grep -E "^(ERROR|error)" "$part" || tail -n 15 "$part"; } >&2
    rm -f "$part"
    exit 1
}

stamp=.venv/.geo-sign-installed
want="$(cat requirements.txt constraints.txt pyproject.toml; echo "$RTMLIB"; command -v nvidia-smi >/dev/null && echo gpu || echo cpu)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

mkdir -p .venv
: >"$LOG"
if [ ! -x .venv/bin/python ]; then
    step "creating .venv with $PYTHON" "$PYTHON" -m venv .venv
fi
. .venv/bin/activate

if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        step "installing the CUDA build of PyTorch (an NVIDIA GPU is here)" pip install torch -c constraints.txt
    else
        step "installing the CPU build of PyTorch ${TORCH_CPU_VERSION} (no GPU: not the multi-GB CUDA build)" \
            pip install "torch==${TORCH_CPU_VERSION}+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
    fi
fi
step "installing the requirements (requirements.txt at constraints.txt's versions)" \
    pip install -r requirements.txt -c constraints.txt
step "installing $RTMLIB without its dependencies" pip install --no-deps "$RTMLIB" -c constraints.txt
if command -v nvidia-smi >/dev/null 2>&1; then
    # the GPU build of onnxruntime (the same module name) for pose extraction with --device cuda
    step "replacing onnxruntime with onnxruntime-gpu (pose extraction on the GPU)" pip uninstall -y onnxruntime
    step "installing onnxruntime-gpu" \
        pip install "onnxruntime-gpu==$(sed -n 's/^onnxruntime-gpu==//p' constraints.txt)" --no-deps
fi
# setuptools 70.1 or newer builds an editable install by itself (older ones need `wheel`); no build isolation, so
# that nothing is downloaded for it
if ! python -c "import setuptools, sys; sys.exit(tuple(map(int, setuptools.__version__.split('.')[:2])) < (70, 1))" \
        2>/dev/null; then
    step "installing setuptools (to install the project)" pip install "setuptools>=70.1"
fi
# Headless Chromium (and a CJK font for Chinese text) for the run report's browser test, tests/test_report.py,
# which skips without it: optional, so a failure here is one line, not a failed setup
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium and chromium-driver (the report's browser test)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
            fonts-wqy-zenhei; } >>"$LOG" 2>&1; then
        echo "setup: chromium could not be installed (its errors: $LOG); the report's browser test will skip"
    fi
fi
step "installing the project's modules, editable (pip install -e .)" \
    pip install --no-deps --no-build-isolation -e .
step "compiling DeepSpeed's communication op for this machine (once per environment)" \
    python -c "import utils; utils.build_communication_op()"
echo "$want" > "$stamp"
echo "setup: done (.venv; log: $LOG)"

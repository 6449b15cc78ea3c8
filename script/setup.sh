#!/usr/bin/env bash
# Create .venv and install everything the project needs. Safe to run again: it only installs what changed.
#   bash script/setup.sh            # CPU build of PyTorch where there is no NVIDIA GPU, CUDA build otherwise
# Every package is installed at the version in constraints.txt (the tested ones), torch's included.
#   TORCH_CPU_VERSION=2.13.0 ...    # which CPU build to take (PyTorch's CPU wheel index, or a local +cpu wheel;
#                                   # default: constraints.txt's torch)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-$(sed -n 's/^torch==//p' constraints.txt)}
RTMLIB=rtmlib==0.0.16  # without its dependencies: see requirements.txt
export PIP_RETRIES=${PIP_RETRIES:-1} PIP_TIMEOUT=${PIP_TIMEOUT:-20}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate

stamp=.venv/.geo-sign-installed
want="$(cat requirements.txt constraints.txt; echo "$RTMLIB"; command -v nvidia-smi >/dev/null && echo gpu || echo cpu)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found, installing the CUDA build of PyTorch"
        pip install torch -c constraints.txt
    else
        echo "setup: no GPU, installing the CPU build of PyTorch ${TORCH_CPU_VERSION} (not the multi-GB CUDA build)"
        pip install "torch==${TORCH_CPU_VERSION}+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
    fi
fi
pip install -r requirements.txt -c constraints.txt
pip install --no-deps "$RTMLIB" -c constraints.txt
if command -v nvidia-smi >/dev/null 2>&1; then
    # the GPU build of onnxruntime (the same module name) for pose extraction with --device cuda
    echo "setup: NVIDIA GPU found, replacing onnxruntime with onnxruntime-gpu (pose extraction on the GPU)"
    pip uninstall -y onnxruntime
    pip install "onnxruntime-gpu==$(sed -n 's/^onnxruntime-gpu==//p' constraints.txt)" --no-deps
fi
echo "setup: compiling DeepSpeed's communication op for this machine (once per environment)"
python -c "import utils; utils.build_communication_op()"
echo "$want" > "$stamp"
echo "setup: done (.venv)"

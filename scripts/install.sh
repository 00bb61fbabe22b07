#!/usr/bin/env bash
# Create .venv (if needed) and install deepatlas with its test tools into it.
# torch is pinned to the CPU build this project is tested with; on a CUDA
# machine, install the CUDA build of torch into .venv first and it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e ".[test]"

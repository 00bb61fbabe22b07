#!/usr/bin/env bash
# Create .venv (if needed) and install deepatlas with its test tools into it.
# torch is pinned to the version this project is tested with (2.13.0; where a local wheel
# store provides it, as on the project's CI machines, the CPU build; from PyPI on Linux, the
# CUDA build). A torch already in .venv is kept: install the build you want there first.
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

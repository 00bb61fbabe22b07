#!/usr/bin/env bash
# Install (if needed) and run the demo: DeepAtlas on built-in brain phantoms, a few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
deepatlas demo "$@"

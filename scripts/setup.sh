#!/usr/bin/env bash
# Create .venv and install lsr into it. Usage: scripts/setup.sh [EXTRAS]   (default: encoders)
# torch is installed first and pinned to 2.13.0, the CPU build that lies on disk on our machines: left to
# resolve on its own, pip would download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-encoders}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"

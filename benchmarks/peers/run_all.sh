#!/usr/bin/env bash
# Run every peer runner on one exchange folder, one after the other, each with its own venv, then check
# the results against exact scoring.
#
#   bash benchmarks/peers/run_all.sh DATA_DIR OUT_DIR [extra args for every runner, e.g. --max-queries 50]
#
# Writes OUT_DIR/<engine>.json and OUT_DIR/recall.json, and index files under OUT_DIR/work/<engine>.
# Engines to run: PEERS="scipy seismic bmp pisa anserini" (default: all whose venv exists).
set -euo pipefail
DATA="$1"; OUT="$2"; shift 2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="${LSR_BENCH_DIR:-$HOME/.cache/lsr-bench}/venvs"
PEERS="${PEERS:-scipy seismic bmp pisa anserini}"
K="${K:-10}"
mkdir -p "$OUT/work"
done_files=()
for engine in $PEERS; do
  py="$VENVS/$engine/bin/python"
  if [ ! -x "$py" ]; then echo "== $engine: no venv at $VENVS/$engine (run setup_peers.sh)" >&2; continue; fi
  case "$engine" in
    scipy) knobs=(--variant qdt) ;;
    seismic) knobs=(--settings "10,0.7;20,0.9") ;;
    bmp) knobs=(--settings "1,1;0.9,1") ;;
    pisa) knobs=(--variant maxscore,block_max_wand,block_max_maxscore) ;;
    anserini) knobs=() ;;
  esac
  echo "== $engine" >&2
  "$py" "$HERE/run_$engine.py" --data "$DATA" --work "$OUT/work/$engine" --k "$K" --out "$OUT/$engine.json" \
    "${knobs[@]}" "$@"
  done_files+=("$OUT/$engine.json")
done
checker_py="$VENVS/scipy/bin/python"
[ -x "$checker_py" ] || checker_py=python3
"$checker_py" "$HERE/check_results.py" "${done_files[@]}" "$DATA" --json "$OUT/recall.json"

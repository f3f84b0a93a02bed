#!/usr/bin/env bash
# The benchmarks' set-up: the dev environment (bash scripts/setup.sh --dev) and the HTTP load tool wrk
# (Debian package, for bench/api_load.py).  Usage: bash scripts/bench_setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if ! command -v wrk > /dev/null; then
  echo "[bench-setup] installing wrk"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q wrk > /dev/null || { echo "[bench-setup] apt-get install wrk failed" >&2; exit 1; }
fi
echo "[bench-setup] wrk: $(command -v wrk)"

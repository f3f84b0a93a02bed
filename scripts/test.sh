#!/usr/bin/env bash
# Installs what the tests need (venv with every extra, Fashion-MNIST, Debian chromium for the browser test) and
# runs them: the whole suite on the embedded store and, at the same time, the API, bad-input, writer, engine, report
# and dedup suites again on Milvus (a milvus-lite server the fixtures start on 127.0.0.1).
# Usage: bash scripts/test.sh [extra pytest arguments, e.g. -m slow]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
bash scripts/ensure_data.sh >/dev/null
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "[test] installing Debian chromium + chromium-driver for the browser test"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "[test] could not install chromium: the browser test will be skipped"
fi
# Two processes at once: the main pass, and beside it the API, bad-input, writer, engine, report and dedup suites on
# Milvus followed by the reliability suites (real servers, kills, faults) on the embedded store. Each process often
# waits (servers starting, fsyncs, Milvus), so together they keep both cores busy and take about as long as each
# other. Each pass has its own temporary root; the second process prints its logs when both are done.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[test] beside the main pass: the API, bad-input, writer, engine, report and dedup suites on Milvus" \
  "(--backend milvus), then tests/reliability"
(
  rc=0
  OMP_NUM_THREADS=1 .venv/bin/python -m pytest -m "not slow" -p no:cacheprovider --backend milvus \
    --basetemp "$work/milvus" tests/api tests/reliability/test_bad_inputs.py tests/reliability/test_writers.py \
    tests/test_engine.py tests/test_reporting.py tests/test_dedup.py "$@" >"$work/milvus.log" 2>&1 || rc=1
  .venv/bin/python -m pytest -m "not slow" -p no:cacheprovider --basetemp "$work/reliability" tests/reliability \
    "$@" >"$work/reliability.log" 2>&1 || rc=$((rc + 2))
  exit "$rc"
) &
beside_pid=$!
main_rc=0
.venv/bin/python -m pytest -m "not slow" -p no:cacheprovider --durations=25 --ignore=tests/reliability \
  --basetemp "$work/main" "$@" || main_rc=$?
beside_rc=0
wait "$beside_pid" || beside_rc=$?
echo "[test] the Milvus pass (--backend milvus):"
cat "$work/milvus.log"
echo "[test] the reliability pass (tests/reliability):"
cat "$work/reliability.log"
echo "[test] main pass exit $main_rc; beside it: $([ $((beside_rc & 1)) = 0 ] && echo ok || echo failed) on" \
  "Milvus, $([ $((beside_rc & 2)) = 0 ] && echo ok || echo failed) in tests/reliability"
[ "$main_rc" = 0 ] && [ "$beside_rc" = 0 ]

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
# The two passes run at once: each is one process that often waits (servers starting, fsyncs, Milvus), so together
# they keep both cores busy. Each has its own temporary root; the Milvus pass prints its log when both are done.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[test] the API, bad-input, writer, engine, report and dedup suites again, on Milvus (--backend milvus), beside the main pass"
OMP_NUM_THREADS=1 .venv/bin/python -m pytest -m "not slow" -p no:cacheprovider --backend milvus \
  --basetemp "$work/milvus" tests/api tests/reliability/test_bad_inputs.py tests/reliability/test_writers.py \
  tests/test_engine.py tests/test_reporting.py tests/test_dedup.py "$@" >"$work/milvus.log" 2>&1 &
milvus_pid=$!
main_rc=0
.venv/bin/python -m pytest -m "not slow" -p no:cacheprovider --durations=25 --basetemp "$work/main" "$@" || main_rc=$?
milvus_rc=0
wait "$milvus_pid" || milvus_rc=$?
echo "[test] the Milvus pass (--backend milvus):"
cat "$work/milvus.log"
echo "[test] main pass exit $main_rc, Milvus pass exit $milvus_rc"
[ "$main_rc" = 0 ] && [ "$milvus_rc" = 0 ]

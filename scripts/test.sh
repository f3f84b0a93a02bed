#!/usr/bin/env bash
# Installs what the tests need (venv with every extra, Fashion-MNIST, Debian chromium for the browser test) and
# runs them: the whole suite on the embedded store, then the API, bad-input and writer suites again on Milvus
# (a milvus-lite server the fixtures start on 127.0.0.1).
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
.venv/bin/python -m pytest -m "not slow" -p no:cacheprovider "$@"
echo "[test] the API, bad-input, writer, engine, report and dedup suites again, on Milvus (--backend milvus)"
exec .venv/bin/python -m pytest -m "not slow" -p no:cacheprovider --backend milvus \
  tests/api tests/reliability/test_bad_inputs.py tests/reliability/test_writers.py tests/test_engine.py \
  tests/test_reporting.py tests/test_dedup.py "$@"

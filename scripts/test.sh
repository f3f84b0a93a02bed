#!/usr/bin/env bash
# Installs what the tests need (venv, Fashion-MNIST, Debian chromium for the browser test) and runs them.
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
exec .venv/bin/python -m pytest -m "not slow" -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Makes sure Fashion-MNIST is available offline: ../shared/datasets, $SIMSEARCH_FASHION_MNIST, or Debian's
# dataset-fashion-mnist package (installed here if none is found; needs root and the Debian mirror).
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv/bin/python -c "from similarity.data import find_fashion_mnist; print(find_fashion_mnist())" 2>/dev/null; then
  exit 0
fi
echo "[data] Fashion-MNIST not found; installing Debian's dataset-fashion-mnist"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
.venv/bin/python -c "from similarity.data import find_fashion_mnist; print(find_fashion_mnist())"

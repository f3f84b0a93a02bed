#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment in .venv and installs simsearch into it.
# Offline-safe: torch/torchvision are taken from this machine's local wheel store by pip.
# Usage: bash scripts/setup.sh [--dev | --milvus | --tune]   (--dev: tests and every extra; --milvus: the Milvus back
# end; --tune: optuna for `simsearch tune`, and TensorBoard)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SIMSEARCH_VENV:-.venv}
PY=${PYTHON:-python3}
req=requirements.txt
[ "${1:-}" = "--dev" ] && req=requirements-dev.txt
[ "${1:-}" = "--milvus" ] && req=requirements-milvus.txt
[ "${1:-}" = "--tune" ] && req=requirements-tune.txt
stamp="$VENV/.simsearch-$(cat requirements.txt requirements-dev.txt requirements-milvus.txt requirements-tune.txt pyproject.toml | sha256sum | cut -c1-16)-$(basename $req .txt)"
if [ -f "$stamp" ]; then
  echo "[setup] $VENV is up to date"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
echo "[setup] installing $req into $VENV (first time takes ~3 minutes: torch is large)"
pip_quiet() {  # pip's exit status, without the local wheel store's harmless "Location ignored" warnings
  "$VENV/bin/python" -m pip "$@" > "$VENV/pip.log" 2>&1 || { grep -v "^WARNING: Location" "$VENV/pip.log" >&2; return 1; }
}
pip_quiet install -q --disable-pip-version-check -r requirements.txt ${req:+-r "$req"} || { echo "[setup] pip install failed" >&2; exit 1; }
pip_quiet install -q --disable-pip-version-check --no-deps --no-build-isolation -e . || { echo "[setup] installing simsearch failed" >&2; exit 1; }
"$VENV/bin/python" -c "import torch, torchvision, faiss, pytorch_metric_learning, sklearn, flask, PIL, similarity" \
  || { echo "[setup] import check failed" >&2; exit 1; }
rm -f "$VENV"/.simsearch-*
touch "$stamp"
echo "[setup] done"

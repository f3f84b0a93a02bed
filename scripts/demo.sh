#!/usr/bin/env bash
# The main job, from a fresh clone: install, train on Fashion-MNIST, build the index, write the report,
# then serve the API and web page on 127.0.0.1 (Ctrl-C stops it).
# Environment: SIMSEARCH_PORT (8000), SIMSEARCH_PRESET (fashion-mnist-demo; 'fashion-mnist' = full recipe),
#              SIMSEARCH_API_TOKEN (enables POST/DELETE /api/images), SIMSEARCH_NO_SERVE=1 (stop before serving)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${SIMSEARCH_PORT:-8000}
PRESET=${SIMSEARCH_PRESET:-fashion-mnist-demo}
RUN=runs/demo
bash scripts/setup.sh
bash scripts/ensure_data.sh
SIM=.venv/bin/simsearch
echo "== 1/4 train ($PRESET)"
$SIM train --data fashion-mnist --preset "$PRESET" --out "$RUN/model"
echo "== 2/4 index the 60k training images"
rm -rf "$RUN/index"
$SIM index build --checkpoint "$RUN/model/model.pt" --data fashion-mnist --out "$RUN/index"
echo "== 3/4 report (10k test queries against the index)"
$SIM report --index "$RUN/index" --queries test --tsne-sample 3000 --threads 2
echo "report: $RUN/index/report/report.html"
[ "${SIMSEARCH_NO_SERVE:-0}" = 1 ] && exit 0
echo "== 4/4 serve on http://127.0.0.1:$PORT/"
exec $SIM serve --index "$RUN/index" --host 127.0.0.1 --port "$PORT"

#!/usr/bin/env bash
# The main job, from a fresh clone: install, train on Fashion-MNIST, build the index, write the report,
# then serve the API and web page on 127.0.0.1 (Ctrl-C stops it).
# Environment: SIMSEARCH_PORT (8000), SIMSEARCH_TRAIN_MINUTES (1.5: the training budget; the recipe fits the model's
#              width and epochs to this machine's measured speed), SIMSEARCH_PRESET (unset; e.g. 'fashion-mnist' for
#              the fixed 7-epoch recipe), SIMSEARCH_API_TOKEN (enables POST/DELETE /api/images),
#              SIMSEARCH_NO_SERVE=1 (stop before serving)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${SIMSEARCH_PORT:-8000}
MINUTES=${SIMSEARCH_TRAIN_MINUTES:-1.5}
RUN=runs/demo
bash scripts/setup.sh
bash scripts/ensure_data.sh
SIM=.venv/bin/simsearch
started=$SECONDS
echo "== 1/4 train (${SIMSEARCH_PRESET:-recipe from the data}, ${MINUTES}-minute budget)"
$SIM train --data fashion-mnist ${SIMSEARCH_PRESET:+--preset "$SIMSEARCH_PRESET"} --budget-minutes "$MINUTES" \
  --out "$RUN/model"
echo "   train: $((SECONDS - started)) s"
echo "== 2/4 index the 60k training images (their embeddings come from training, spot-checked)"
rm -rf "$RUN/index"
# --duplicates keep: the report's data-hygiene section below lists the collection's duplicates and leaks
$SIM index build --checkpoint "$RUN/model/model.pt" --data fashion-mnist --out "$RUN/index" --duplicates keep
echo "   train + index: $((SECONDS - started)) s"
echo "== 3/4 report (10k test queries against the index)"
$SIM report --index "$RUN/index" --queries test --tsne-sample 2000 --threads 2
echo "report: $RUN/index/report/report.html ($((SECONDS - started)) s after set-up)"
[ "${SIMSEARCH_NO_SERVE:-0}" = 1 ] && exit 0
echo "== 4/4 serve on http://127.0.0.1:$PORT/"
exec $SIM serve --index "$RUN/index" --host 127.0.0.1 --port "$PORT"

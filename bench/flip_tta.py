"""Figure: flip test-time augmentation on photos, on and off for the same checkpoints, in the same run.

The photo recipe leaves flip TTA off (it doubles the cost of every embedding with a large backbone); this
measures what that costs in quality. Each checkpoint's own held-out test split is searched against the rest,
embedded by torch with and without the mirrored view.

    .venv/bin/python -m bench.flip_tta --data ../shared/datasets/trashnet-150 \
        --checkpoints runs/auto-trashnet_target/model.pt runs/auto-trashnet_target_rerun/model.pt
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from bench.auto_recipe import held_out_split
from bench.machine import emit
from similarity.checkpoint import load_checkpoint
from similarity.data import load_labelled_images
from similarity.embedder import Embedder
from similarity.metrics import retrieval_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--checkpoints", nargs="+", required=True, help="trained with --test-fraction")
    args = parser.parse_args()
    data = load_labelled_images(args.data)
    rows = []
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        gallery, queries = held_out_split(ckpt, data)
        row = {"checkpoint": path, "queries": len(queries), "gallery": len(gallery)}
        for flip in (False, True):
            embedder = Embedder(ckpt.model, replace(ckpt.preprocess, flip_tta=flip))
            started = time.perf_counter()
            xb = embedder.embed_data(gallery, batch_size=64, num_workers=1, progress=False).embeddings
            xq = embedder.embed_data(queries, batch_size=64, num_workers=1, progress=False).embeddings
            seconds = time.perf_counter() - started
            metrics = retrieval_metrics(xq, queries.labels, xb, gallery.labels, k=10)
            row["flip_tta" if flip else "plain"] = {"knn_accuracy@10": round(metrics["knn_accuracy@10"], 4),
                                                    "precision_at_1": round(metrics["precision_at_1"], 4),
                                                    "embed_seconds": round(seconds, 1)}
        row["knn_gain_points"] = round(100 * (row["flip_tta"]["knn_accuracy@10"] - row["plain"]["knn_accuracy@10"]), 2)
        rows.append(row)
    emit({"figure": "flip test-time augmentation on photos, on against off, same checkpoints",
          "command": "python -m bench.flip_tta --data " + args.data + " --checkpoints " + " ".join(args.checkpoints),
          "runtime": "torch", "rows": rows}, "bench/results/flip_tta_photos.json")


if __name__ == "__main__":
    main()

"""Figure: ``simsearch train --data DIR`` with no recipe flag (the recipe chosen from the data, the default time
budget), then the kNN accuracy of its model against the hand-tuned figure (issue 14, figure 2).

The train command runs as a subprocess exactly as a user types it, plus only what the evaluation needs: with
``--queries DIR`` (a separate test folder, e.g. Fashion-MNIST's test PNGs) nothing else; without it
``--test-fraction 0.2`` (stratified, seed 0, as the hand-tuned TrashNet run).  The evaluation embeds with the
product's runtime (auto) and scores with :func:`similarity.metrics.retrieval_metrics` (k = 10).

    .venv/bin/python -m bench.auto_recipe --data ../shared/datasets/trashnet-150 --name trashnet \
        --reference bench/results/train_trashnet.json
    .venv/bin/python -m bench.auto_recipe --data data/fashion-mnist-png/train --queries data/fashion-mnist-png/test \
        --name fashion_mnist --reference bench/results/train_fashion_mnist.json

The quality targets (figure 1) are the same command with the target's budget and bar:

    .venv/bin/python -m bench.auto_recipe --data data/fashion-mnist-png/train --queries data/fashion-mnist-png/test \
        --name fashion_mnist_target --budget-minutes 15 --target 0.94
    .venv/bin/python -m bench.auto_recipe --data ../shared/datasets/trashnet-150 --name trashnet_target \
        --budget-minutes 20 --target 0.93
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from bench import REPO
from bench.machine import emit
from similarity.checkpoint import load_checkpoint
from similarity.data import load_labelled_images
from similarity.metrics import retrieval_metrics
from similarity.runtime import EmbedRuntime, load_embedder


def reference_accuracy(path: str | None) -> dict | None:
    if not path or not os.path.exists(path):
        return None
    found = json.load(open(path))
    metrics = found.get("fine_tuned") or found.get("test_vs_train_gallery") or {}
    return {"file": path, "knn_accuracy@10": metrics.get("knn_accuracy@10"),
            "train_seconds": found.get("train_seconds"), "command": found.get("command")}


def held_out_split(ckpt, data):
    """(gallery, queries) of ``data``: the test split the checkpoint was trained without (``--test-fraction``),
    and the rest."""
    test = np.asarray(ckpt.extra["split"]["test"])
    return data.subset(np.setdiff1d(np.arange(len(data)), test)), data.subset(test)


def score_checkpoint(ckpt, gallery, queries) -> dict[str, float]:
    """Retrieval metrics (k = 10) of ``queries`` against ``gallery``, embedded with the product's runtime (auto)."""
    embedder = load_embedder(ckpt, EmbedRuntime("auto"))
    xb = embedder.embed_data(gallery, progress=False).embeddings
    xq = embedder.embed_data(queries, progress=False).embeddings
    return retrieval_metrics(xq, queries.labels, xb, gallery.labels, k=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--queries", default=None, help="a separate test folder (else a 20%% test split)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--reference", default=None, help="the hand-tuned run's result JSON")
    parser.add_argument("--out", default=None, help="training output folder (default runs/auto-NAME)")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="passed to simsearch train (default: its own default budget)")
    parser.add_argument("--target", type=float, default=None, help="the kNN accuracy the run must reach")
    args = parser.parse_args()
    out = args.out or os.path.join(REPO, "runs", f"auto-{args.name}")
    command = [sys.executable, "-m", "simsearch.cli", "train", "--data", args.data, "--out", out, "--quiet"]
    if args.queries is None:
        command += ["--test-fraction", "0.2"]
    if args.budget_minutes is not None:
        command += ["--budget-minutes", f"{args.budget_minutes:g}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"training failed ({done.returncode}): {done.stderr[-3000:]}")
    printed = [line for line in done.stdout.splitlines() if line.startswith("recipe: ")]
    ckpt = load_checkpoint(os.path.join(out, "model.pt"))
    data = load_labelled_images(args.data)
    if args.queries:
        gallery, queries = data, load_labelled_images(args.queries)
        split = f"{args.queries} against all of {args.data}"
    else:
        gallery, queries = held_out_split(ckpt, data)
        split = f"the 20% test split ({len(queries)}) against the rest ({len(gallery)})"
    metrics = score_checkpoint(ckpt, gallery, queries)
    config = ckpt.config
    curves = os.path.join(REPO, "bench", "results", f"auto_recipe_{args.name}_curves.png")
    shutil.copyfile(os.path.join(out, "curves.png"), curves)  # loss, validation, LR per epoch
    emit({"figure": "simsearch train --data DIR with the recipe chosen from the data, against the hand-tuned run",
          "command": " ".join(["simsearch", *command[3:]]),
          "wall_seconds": round(wall, 1),
          "recipe_line": printed[0][len("recipe: "):] if printed else None,
          "chosen": {"backbone": config.model.backbone, "image_size": config.preprocess.image_size,
                     "channels": config.preprocess.channels, "mean": config.preprocess.mean,
                     "std": config.preprocess.std, "flip_tta": config.preprocess.flip_tta,
                     "batch_size": config.batch_size, "lr": config.lr, "epochs_planned": config.epochs,
                     "epochs_run": len(ckpt.history), "val_fraction": config.val_fraction,
                     "budget_minutes": getattr(config, "budget_minutes", None)},
          "reasons": ckpt.extra.get("recipe", {}).get("reasons"),
          "train_seconds": ckpt.extra.get("train_seconds"),
          "budget": {k: ckpt.extra.get("budget", {}).get(k) for k in ("budget_seconds", "elapsed_seconds",
                                                                      "planned_epochs")},
          "stopped_because": (ckpt.metrics or {}).get("stopped_because"),
          "curves": os.path.relpath(curves, REPO),
          "evaluation": split, "metrics": metrics,
          "target": None if args.target is None else {
              "knn_accuracy@10": args.target, "reached": metrics["knn_accuracy@10"] >= args.target,
              "budget_minutes": args.budget_minutes, "within_budget": wall <= 60 * (args.budget_minutes or 15) + 120},
          "reference": reference_accuracy(args.reference)},
         os.path.join(REPO, "bench", "results", f"auto_recipe_{args.name}.json"))


if __name__ == "__main__":
    main()

"""Figure: the default recipe, unchanged, on every data set in ``../shared/datasets``, in two CPU modes, against
the frozen start.

For each data set and mode, ``simsearch train --data SET`` runs exactly as a user types it (the default budget,
no recipe flag) plus only what the evaluation needs: ``--test-fraction 0.2`` for a folder of photos (stratified,
seed 0), Fashion-MNIST's own 10k test images for Fashion-MNIST. Then, on the same split:

- the trained model's kNN accuracy (k = 10) of the test images against the rest, embedded as the product embeds;
- the baseline: the frozen ImageNet EfficientNet-Lite0 features at 224 px (1280-d, global average pool, cosine)
  for photos; raw pixels (centred, cosine) for small grayscale sets;
- the gain, and what the recipe chose (input size, trainable blocks, epochs, time).

Modes: ``native`` (the machine's full CPU) and ``avx2`` (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``,
``MKL_ENABLE_INSTRUCTIONS=AVX2``: torch's AVX2 kernels, as on a CPU without AVX-512 or AMX; an approximation,
since clock speed and caches differ too). Results merge into ``bench/results/recipe_matrix.json`` by (set, mode),
so a run can cover part of the matrix:

    .venv/bin/python -m bench.recipe_matrix                           # every set, both modes (~2 h on 2 cores)
    .venv/bin/python -m bench.recipe_matrix --sets trashnet-150 --modes avx2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from bench import REPO
from bench.auto_recipe import held_out_split, score_checkpoint
from bench.machine import machine_info
from similarity.checkpoint import load_checkpoint
from similarity.data import LabelledImages, load_fashion_mnist, load_labelled_images
from similarity.metrics import retrieval_metrics

DATASETS = os.path.normpath(os.path.join(REPO, "..", "shared", "datasets"))
RESULTS = os.path.join(REPO, "bench", "results", "recipe_matrix.json")
MODES = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
BASELINE_SIZE = 224


def discover(root: str) -> list[str]:
    """The data sets under ``root``: Fashion-MNIST (its IDX files) and every folder of class folders."""
    found = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not os.path.isdir(path):
            continue
        if is_idx(path) or any(os.path.isdir(os.path.join(path, sub)) for sub in os.listdir(path)):
            found.append(name)
    return found


def is_idx(path: str) -> bool:
    return any(f.startswith("train-images-idx3") for f in os.listdir(path))


def train_command(path: str, out: str) -> list[str]:
    command = [sys.executable, "-m", "simsearch.cli", "train", "--out", out, "--quiet"]
    if is_idx(path):
        return command + ["--data", "fashion-mnist", "--fashion-mnist-dir", path]
    return command + ["--data", path, "--test-fraction", "0.2"]


def gallery_and_queries(path: str, ckpt) -> tuple[LabelledImages, LabelledImages]:
    if is_idx(path):
        return load_fashion_mnist(path, "train"), load_fashion_mnist(path, "test")
    return held_out_split(ckpt, load_labelled_images(path))


def baseline(gallery: LabelledImages, queries: LabelledImages, small_grayscale: bool) -> dict:
    """kNN of the untrained start: raw pixels for small grayscale sets, frozen ImageNet features for photos."""
    started = time.perf_counter()
    if small_grayscale:
        def pixels(data: LabelledImages) -> np.ndarray:
            x = data.pixels.reshape(len(data), -1).astype(np.float32) / 255.0
            x -= x.mean(axis=1, keepdims=True)
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        xb, xq, what = pixels(gallery), pixels(queries), "raw pixels (centred, cosine)"
    else:
        from similarity.config import ModelConfig
        from similarity.embedder import Embedder
        from similarity.models import EmbeddingNet, default_preprocess

        import torch

        config = ModelConfig(backbone="efficientnet_lite0", pretrained=True, trainable_blocks=0)
        net = EmbeddingNet(config, default_preprocess(config, BASELINE_SIZE))
        net.head = torch.nn.Identity()  # the backbone's own 1280-d pooled features (normalised by forward)
        embedder = Embedder(net, default_preprocess(config, BASELINE_SIZE))
        xb = embedder.embed_data(gallery, progress=False).embeddings
        xq = embedder.embed_data(queries, progress=False).embeddings
        what = f"frozen ImageNet EfficientNet-Lite0 features at {BASELINE_SIZE} px (1280-d, cosine)"
    metrics = retrieval_metrics(xq, queries.labels, xb, gallery.labels, k=10)
    return {"what": what, "knn_accuracy@10": metrics["knn_accuracy@10"], "precision_at_1": metrics["precision_at_1"],
            "mean_average_precision_at_r": metrics["mean_average_precision_at_r"],
            "seconds": round(time.perf_counter() - started, 1)}


def run_one(name: str, mode: str) -> dict:
    path = os.path.join(DATASETS, name)
    out = os.path.join(REPO, "runs", "matrix", f"{name}-{mode}")
    command = train_command(path, out)
    env = {**os.environ, "PYTHONPATH": REPO, **MODES[mode]}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"training {name} ({mode}) failed ({done.returncode}): {done.stderr[-3000:]}")
    ckpt = load_checkpoint(os.path.join(out, "model.pt"))
    gallery, queries = gallery_and_queries(path, ckpt)
    trained = score_checkpoint(ckpt, gallery, queries)
    small = ckpt.config.model.backbone == "smallcnn"
    base = baseline(gallery, queries, small)
    config = ckpt.config
    start = (ckpt.metrics or {}).get("start")
    return {
        "set": name, "mode": mode, "command": " ".join(["simsearch", *command[3:]]),
        "env": MODES[mode], "wall_seconds": round(wall, 1),
        "split": f"{len(queries)} test images against {len(gallery)}",
        "baseline": base,
        "trained": {k: trained[k] for k in ("knn_accuracy@10", "precision_at_1", "mean_average_precision_at_r")},
        "gain_points": round(100 * (trained["knn_accuracy@10"] - base["knn_accuracy@10"]), 2),
        "chosen": {"backbone": config.model.backbone, "image_size": config.preprocess.image_size,
                   "trainable_blocks": config.model.trainable_blocks, "flip_tta": config.preprocess.flip_tta,
                   "augment_flip": config.augment_flip, "precision": config.precision,
                   "epochs_run": sum(1 for row in ckpt.history if row["epoch"] > 0),
                   "best_epoch": (ckpt.metrics or {}).get("best_epoch"),
                   "stopped_because": (ckpt.metrics or {}).get("stopped_because")},
        "budget": {k: ckpt.extra.get("budget", {}).get(k) for k in ("budget_seconds", "elapsed_seconds",
                                                                    "planned_epochs")},
        "against_start": None if start is None else {k: start.get(k) for k in ("start_val", "trained_val", "gain",
                                                                                 "p_value", "significant", "verdict")},
        "reasons": ckpt.extra.get("recipe", {}).get("reasons"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="*", default=None, help="data set folder names (default: all found)")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    args = parser.parse_args()
    sets = args.sets or discover(DATASETS)
    document = json.load(open(RESULTS)) if os.path.exists(RESULTS) else {"figure": __doc__.split("\n\n")[0],
                                                                         "runs": []}
    for mode in args.modes:
        for name in sets:
            result = run_one(name, mode)
            result["machine"] = machine_info()
            document["runs"] = [r for r in document["runs"] if (r["set"], r["mode"]) != (name, mode)] + [result]
            document["runs"].sort(key=lambda r: (r["set"], r["mode"]))
            os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
            with open(RESULTS, "w") as handle:
                json.dump(document, handle, indent=2)
                handle.write("\n")
            print(json.dumps({k: result[k] for k in ("set", "mode", "baseline", "trained", "gain_points", "chosen",
                                                     "wall_seconds")}), flush=True)


if __name__ == "__main__":
    main()

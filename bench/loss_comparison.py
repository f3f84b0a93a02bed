"""Figure: which objective makes the best embedding? Contrastive pairs (Siamese, PairSampler) vs triplet
(semi-hard mining, class-balanced batches) vs multi-similarity (mining, class-balanced) vs normalised
softmax (proxy). Same network, data, epochs, augmentation and seed for each; Fashion-MNIST test (10k)
searched against the training gallery.

    .venv/bin/python -m bench.loss_comparison [--train-size 20000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from bench.machine import emit
from similarity.config import LossConfig, SamplerConfig
from similarity.data import load_fashion_mnist
from similarity.metrics import retrieval_metrics
from similarity.presets import fashion_mnist_full

CANDIDATES = {
    "contrastive pairs (PairSampler, 50% positive)": (LossConfig(name="contrastive"), SamplerConfig(kind="pairs")),
    "triplet, semi-hard mining (class-balanced)": (LossConfig(name="triplet", mining="semihard"),
                                                    SamplerConfig(kind="m_per_class")),
    "multi-similarity (class-balanced)": (LossConfig(name="multisimilarity"), SamplerConfig(kind="m_per_class")),
    "normalised softmax (proxy)": (LossConfig(name="normsoftmax"), SamplerConfig(kind="random")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--result", default="bench/results/loss_comparison.json")
    args = parser.parse_args()
    from similarity.train import train

    full, test = load_fashion_mnist(None, "train"), load_fashion_mnist(None, "test")
    rng = np.random.default_rng(0)
    subset = full.subset(np.sort(rng.choice(len(full), args.train_size, replace=False)))
    rows = {}
    for name, (loss, sampler) in CANDIDATES.items():
        config = replace(fashion_mnist_full(), loss=loss, sampler=sampler, epochs=args.epochs, val_fraction=0.0,
                         max_minutes=0.0, patience=0)
        started = time.perf_counter()
        result = train(subset, config, f"runs/loss-{loss.name}", progress=False)
        from similarity.checkpoint import load_checkpoint

        embedder = load_checkpoint(result.checkpoint_path).embedder()
        gallery = embedder.embed_data(subset, progress=False).embeddings
        queries = embedder.embed_data(test, progress=False).embeddings
        metrics = retrieval_metrics(queries, test.labels, gallery, subset.labels, k=10)
        rows[name] = {**{k: round(v, 4) for k, v in metrics.items()}, "loss": loss.name, "sampler": sampler.kind,
                      "train_seconds": round(result.train_seconds, 1),
                      "train_images_per_second": round(result.images_per_second, 1),
                      "wall_seconds": round(time.perf_counter() - started, 1)}
        print(name, rows[name], flush=True)
    best = max(rows, key=lambda n: rows[n]["knn_accuracy@10"])
    emit({"figure": "loss comparison on Fashion-MNIST",
          "command": f"python -m bench.loss_comparison --train-size {args.train_size} --epochs {args.epochs}",
          "setup": f"{args.train_size} random training images (seed 0), {args.epochs} epochs, smallcnn width 32, "
                   "128-d, batch 256, AdamW + warm-up/cosine, same augmentation; 10k test queries vs those images",
          "results": rows, "best_by_knn_accuracy": best}, args.result)


if __name__ == "__main__":
    main()

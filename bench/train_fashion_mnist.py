"""Figure: Fashion-MNIST kNN accuracy / precision@1 / MAP@R after training on the 60k train set,
10k test queries searched against the 60k train gallery; training wall time and throughput.

    .venv/bin/python -m bench.train_fashion_mnist [--epochs N] [--out runs/fmnist-full]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from bench.machine import emit
from similarity.checkpoint import load_checkpoint
from similarity.data import load_fashion_mnist
from similarity.metrics import retrieval_metrics
from similarity.presets import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--out", default="runs/fmnist-full")
    parser.add_argument("--result", default="bench/results/train_fashion_mnist.json")
    args = parser.parse_args()
    from similarity.train import train

    config = PRESETS[args.preset]()
    config = replace(config, max_minutes=0.0, **({"epochs": args.epochs} if args.epochs else {}))
    train_set, test_set = load_fashion_mnist(None, "train"), load_fashion_mnist(None, "test")
    started = time.perf_counter()
    result = train(train_set, config, args.out, progress=True)
    wall = time.perf_counter() - started
    embedder = load_checkpoint(result.checkpoint_path).embedder()
    t0 = time.perf_counter()
    gallery = embedder.embed_data(train_set, progress=False).embeddings
    queries = embedder.embed_data(test_set, progress=False).embeddings
    embed_seconds = time.perf_counter() - t0
    metrics = retrieval_metrics(queries, test_set.labels, gallery, train_set.labels, k=10)
    emit({
        "figure": "Fashion-MNIST: 10k test queries vs 60k train gallery",
        "command": "python -m bench.train_fashion_mnist" + (f" --epochs {args.epochs}" if args.epochs else ""),
        "config": config.to_dict(),
        "test_vs_train_gallery": metrics,
        "val_history": result.history,
        "best_epoch": result.best_epoch,
        "stopped_because": result.stopped_because,
        "train_seconds": round(result.train_seconds, 1),
        "wall_seconds_including_validation": round(wall, 1),
        "train_images_per_second": round(result.images_per_second, 1),
        "embed_70k_seconds": round(embed_seconds, 1),
        "checkpoint": result.checkpoint_path,
    }, args.result)


if __name__ == "__main__":
    main()

"""Figure: TrashNet-150, EfficientNet-Lite0 fine-tuned from ImageNet weights (offline), stratified
80/20 split with seed 0: kNN accuracy and precision@1 of the 20% against the 80%; the frozen-ImageNet
baseline on the same split; training wall time and throughput.

    .venv/bin/python -m bench.train_trashnet [--data ../shared/datasets/trashnet-150] [--epochs N]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from bench.machine import emit
from similarity.checkpoint import load_checkpoint
from similarity.data import load_image_folder
from similarity.embedder import Embedder
from similarity.metrics import retrieval_metrics
from similarity.models import EmbeddingNet
from similarity.presets import photos


def frozen_baseline(data, split, config) -> dict:
    """kNN on the pooled ImageNet features (no training, no projection head)."""
    model = EmbeddingNet(config.model, config.preprocess)
    model.head = torch.nn.Identity()
    embedder = Embedder(model, config.preprocess)
    emb = embedder.embed_data(data, batch_size=64, num_workers=1, progress=False).embeddings
    emb = torch.nn.functional.normalize(torch.from_numpy(emb), dim=1).numpy()
    tr, te = split["train"], split["test"]
    return retrieval_metrics(emb[te], data.labels[te], emb[tr], data.labels[tr], k=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/datasets/trashnet-150")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--image-size", type=int, default=150)
    parser.add_argument("--out", default="runs/trashnet")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--result", default="bench/results/train_trashnet.json")
    args = parser.parse_args()
    from similarity.data import stratified_split
    from similarity.train import train

    config = replace(photos(args.image_size), val_fraction=0.0, test_fraction=0.2, patience=0, max_minutes=0.0,
                     seed=0, **({"epochs": args.epochs} if args.epochs else {}))
    data = load_image_folder(args.data)
    split = stratified_split(data.labels, val_fraction=0.0, test_fraction=0.2, seed=0)
    baseline = None if args.skip_baseline else frozen_baseline(data, split, config)
    started = time.perf_counter()
    result = train(data, config, args.out, progress=True)
    wall = time.perf_counter() - started
    assert (result.split["test"] == split["test"]).all()
    embedder = load_checkpoint(result.checkpoint_path).embedder()
    emb = embedder.embed_data(data, batch_size=64, num_workers=1, progress=False).embeddings
    tr, te = split["train"], split["test"]
    metrics = retrieval_metrics(emb[te], data.labels[te], emb[tr], data.labels[tr], k=10)
    emit({
        "figure": "TrashNet-150: 20% test queries vs 80% train gallery (stratified, seed 0)",
        "command": "python -m bench.train_trashnet" + (f" --epochs {args.epochs}" if args.epochs else ""),
        "images": len(data), "train_images": len(tr), "test_images": len(te),
        "skipped_files": [s.path for s in data.skipped],
        "config": config.to_dict(),
        "fine_tuned": metrics,
        "frozen_imagenet_baseline": baseline,
        "history": result.history,
        "train_seconds": round(result.train_seconds, 1),
        "wall_seconds": round(wall, 1),
        "train_images_per_second": round(result.images_per_second, 1),
        "checkpoint": result.checkpoint_path,
    }, args.result)


if __name__ == "__main__":
    main()

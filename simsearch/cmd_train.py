"""``simsearch train``: train an embedding model on a labelled image collection."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace

from engine.training import (BACKBONES, CHECKPOINT_FILE, LOSSES, PRESETS, SAMPLERS, LabelledImages, TrainConfig,
                             default_preprocess, default_sampler, find_fashion_mnist, load_fashion_mnist,
                             load_labelled_images, train, with_overrides)

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train an embedding model (metric learning)",
                              description="Train an embedding network. --data is a folder with one sub-folder "
                                          "per class, a CSV of path,label, or 'fashion-mnist'.")
    p.add_argument("--data", required=True, help="image folder, CSV of path,label, or 'fashion-mnist'")
    p.add_argument("--out", default="runs/model", help=f"output folder ({CHECKPOINT_FILE}, history.json, curves.png)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="recipe to start from (default: fashion-mnist-demo for Fashion-MNIST, photos otherwise)")
    p.add_argument("--fashion-mnist-dir", default=None, help="folder with the four Fashion-MNIST .gz files")
    p.add_argument("--download", action="store_true", help="download Fashion-MNIST if not found (needs internet)")
    p.add_argument("--backbone", choices=BACKBONES)
    p.add_argument("--no-pretrained", action="store_true", help="start the backbone from random weights")
    p.add_argument("--trainable-blocks", type=int, help="-1 all, 0 frozen backbone, N last N blocks")
    p.add_argument("--embedding-dim", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--sampler", choices=SAMPLERS)
    p.add_argument("--positive-fraction", type=float, help="share of positive pairs (pairs sampler)")
    p.add_argument("--m-per-class", type=int, help="images per class in a batch (m_per_class sampler)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--test-fraction", type=float)
    p.add_argument("--patience", type=int)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="DataLoader workers for image files")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def load_training_data(args: argparse.Namespace) -> tuple[LabelledImages, LabelledImages | None]:
    """(training collection, official test collection or None)."""
    if args.data == "fashion-mnist":
        root = find_fashion_mnist(args.fashion_mnist_dir, download_to="data/downloads" if args.download else None)
        return load_fashion_mnist(root, "train"), load_fashion_mnist(root, "test")
    return load_labelled_images(args.data), None


def build_config(args: argparse.Namespace, data: LabelledImages) -> TrainConfig:
    preset = args.preset or ("fashion-mnist-demo" if data.in_memory else "photos")
    config = PRESETS[preset]()
    model = with_overrides(config.model, backbone=args.backbone, embedding_dim=args.embedding_dim,
                           trainable_blocks=args.trainable_blocks)
    if args.no_pretrained:
        model = replace(model, pretrained=False)
    preprocess = config.preprocess
    if model.backbone != config.model.backbone or args.image_size:
        preprocess = default_preprocess(model, args.image_size or (config.preprocess.image_size
                                                                   if model.backbone == config.model.backbone else None))
    loss = with_overrides(config.loss, name=args.loss)
    kind = args.sampler
    if kind is None and args.loss is not None:  # a loss chosen on the command line brings its sampler
        kind = default_sampler(args.loss)
    sampler = with_overrides(config.sampler, kind=kind, positive_fraction=args.positive_fraction,
                             m_per_class=args.m_per_class)
    return with_overrides(replace(config, model=model, preprocess=preprocess, loss=loss, sampler=sampler),
                          epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, patience=args.patience, max_minutes=args.max_minutes,
                          seed=args.seed, num_workers=args.workers, device=args.device)


def run(args: argparse.Namespace) -> int:
    data, test = load_training_data(args)
    print(data.summary())
    for item in data.skipped:
        print(f"  skipped {item.reason}")
    config = build_config(args, data)
    result = train(data, config, args.out, test_data=test, progress=not args.quiet)
    print(json.dumps({"checkpoint": result.checkpoint_path, "best_epoch": result.best_epoch,
                      "stopped_because": result.stopped_because, "train_seconds": round(result.train_seconds, 1),
                      "images_per_second": round(result.images_per_second, 1),
                      "val": result.val_metrics, "test": result.test_metrics}, indent=2))
    return 0

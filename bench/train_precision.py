"""Figure: training the small CNN with a bfloat16 forward pass against fp32, in the same run: training images
per second and the kNN accuracy reached after the same epochs (10k Fashion-MNIST test queries against the
training gallery). bf16 runs first, so fp32 is not favoured by a warmer machine.

    .venv/bin/python -m bench.train_precision [--epochs 3] [--out bench/results/train_precision.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace

from bench import REPO
from bench.machine import emit
from similarity.data import load_fashion_mnist
from similarity.presets import fashion_mnist_full
from similarity.recipe import native_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "train_precision.json"))
    args = parser.parse_args()
    from similarity.train import train

    train_set, test_set = load_fashion_mnist(None, "train"), load_fashion_mnist(None, "test")
    rows = {}
    for precision in ("bf16", "fp32"):
        config = replace(fashion_mnist_full(), epochs=args.epochs, precision=precision, val_fraction=2000 / 60000)
        with tempfile.TemporaryDirectory() as out:
            result = train(train_set, config, out, test_data=test_set, progress=False)
        rows[precision] = {"train_seconds": round(result.train_seconds, 1),
                           "train_images_per_second": round(result.images_per_second, 1),
                           "epoch_seconds": [row["seconds"] for row in result.history],
                           "val_knn_accuracy": [row.get("val_knn_accuracy") for row in result.history],
                           "test_knn_accuracy@10": result.test_metrics["knn_accuracy@10"],
                           "test_precision_at_1": result.test_metrics["precision_at_1"]}
    emit({"figure": "small CNN on Fashion-MNIST: bf16 autocast forward pass vs fp32 (torch.compile, channels-last)",
          "command": f"python -m bench.train_precision --epochs {args.epochs} --out {os.path.relpath(args.out, REPO)}",
          "native_bf16": native_bf16(),
          "evaluation": "10k test queries against the 58k training images (2k validated)",
          "results": rows,
          "speed_up": round(rows["bf16"]["train_images_per_second"] / rows["fp32"]["train_images_per_second"], 2)},
         args.out)


if __name__ == "__main__":
    main()

"""Figure: embedding throughput when building an index (batched DataLoader, workers, inference mode,
large batches) against a naive loop that decodes and embeds one image at a time, in the same run.

    .venv/bin/python -m bench.embed_throughput --checkpoint runs/fmnist-full/model.pt --data fashion-mnist
    .venv/bin/python -m bench.embed_throughput --checkpoint runs/trashnet/model.pt --data ../shared/datasets/trashnet-150
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.machine import emit
from similarity.checkpoint import load_checkpoint
from similarity.data import load_labelled_images
from similarity.imageio import open_image


def naive_loop(embedder, paths: list[str]) -> float:
    """images/s of: decode one file, preprocess it, run the model on a batch of one."""
    started = time.perf_counter()
    for path in paths:
        x = embedder.transform(open_image(path))[None]
        embedder.embed_tensor(x)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="'fashion-mnist' (70k PNG files) or a folder/CSV")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive-sample", type=int, default=1000, help="images timed in the naive loop")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if args.data == "fashion-mnist":
        from similarity.data import fashion_mnist_folder

        train, test = fashion_mnist_folder("train"), fashion_mnist_folder("test")
        paths, name = train.paths + test.paths, args.name or "fashion_mnist"
    else:
        data = load_labelled_images(args.data)
        paths, name = data.paths, args.name or "trashnet"
    embedder = load_checkpoint(args.checkpoint).embedder()
    torch.set_num_threads(torch.get_num_threads())
    rng = np.random.default_rng(0)
    sample = [paths[i] for i in rng.choice(len(paths), min(args.naive_sample, len(paths)), replace=False)]
    naive_loop(embedder, sample[:20])  # warm-up
    naive = naive_loop(embedder, sample)
    started = time.perf_counter()
    result = embedder.embed_data(paths, batch_size=args.batch_size, num_workers=args.workers, progress=False)
    batched_seconds = time.perf_counter() - started
    batched = len(paths) / batched_seconds
    emit({"figure": "embedding throughput when building an index", "name": name,
          "command": f"python -m bench.embed_throughput --checkpoint {args.checkpoint} --data {args.data}",
          "images": len(paths), "embedded": int(len(result.kept)), "skipped": len(result.skipped),
          "batched": {"images_per_second": round(batched, 1), "seconds": round(batched_seconds, 1),
                      "batch_size": args.batch_size, "workers": args.workers},
          "naive_one_at_a_time": {"images_per_second": round(naive, 1), "images_timed": len(sample)},
          "speedup": round(batched / naive, 2), "target_speedup": 5.0,
          "flip_tta": embedder.preprocess.flip_tta}, f"bench/results/embed_throughput_{name}.json")


if __name__ == "__main__":
    main()

"""Figure: what starting DataLoader workers from a fork server costs (similarity/workers.py), against forking
them from the calling process (torch's default), in the same run: the first loader of a process (which starts
the server) and the loaders after it (one per epoch in training, one per `index build`).

    .venv/bin/python -m bench.worker_start --data ../shared/datasets/trashnet-150
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import numpy as np

from bench.machine import emit
from similarity import embedder as embedder_module
from similarity.config import PreprocessSpec
from similarity.data import load_labelled_images
from similarity.workers import worker_context


def _time_loader(data, spec: PreprocessSpec, workers: int) -> tuple[float, float]:
    """(seconds to the first batch, seconds to the end) of one pass of the embedding loader."""
    started = time.perf_counter()
    first = None
    for _ in embedder_module.preprocessed_batches(data, spec, batch_size=32, num_workers=workers):
        first = first if first is not None else time.perf_counter() - started
    return first, time.perf_counter() - started


def _measure(name: str, context_for, data, spec: PreprocessSpec, workers: int, repeats: int) -> dict:
    embedder_module.worker_context = context_for
    runs = [_time_loader(data, spec, workers) for _ in range(repeats + 1)]
    return {"start_method": name,
            "first_loader": {"first_batch_s": round(runs[0][0], 3), "total_s": round(runs[0][1], 3)},
            "later_loaders_median": {"first_batch_s": round(statistics.median(r[0] for r in runs[1:]), 3),
                                     "total_s": round(statistics.median(r[1] for r in runs[1:]), 3)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="a labelled folder or CSV of photos")
    parser.add_argument("--images", type=int, default=256, help="images per pass")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="loaders timed after the first")
    args = parser.parse_args()
    data = load_labelled_images(args.data)
    data = data.subset(np.random.default_rng(0).choice(len(data), min(args.images, len(data)), replace=False))
    spec = PreprocessSpec(image_size=160, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    fork = _measure("fork (torch's default)", lambda n: multiprocessing.get_context("fork") if n else None,
                    data, spec, args.workers, args.repeats)
    server = _measure("forkserver (similarity.workers)", worker_context, data, spec, args.workers, args.repeats)
    emit({"figure": "DataLoader worker start-up: fork server against fork", "command":
          f"python -m bench.worker_start --data {args.data}", "images_per_pass": len(data),
          "workers": args.workers, "input": "RGB 160 px", "results": [fork, server],
          "extra_per_later_loader_s": round(server["later_loaders_median"]["total_s"]
                                            - fork["later_loaders_median"]["total_s"], 3),
          "extra_once_per_process_s": round(server["first_loader"]["total_s"] - fork["first_loader"]["total_s"], 3)},
         "bench/results/worker_start.json")


if __name__ == "__main__":
    main()

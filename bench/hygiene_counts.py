"""Duplicates and leakage in the two benchmark data sets, found by the product's own paths (issue 15, figure 2).

* **Fashion-MNIST**: duplicate groups in the 60k training set (``Engine.find_duplicates`` on the demo index,
  candidates by the demo model's cosine, confirmed by pixels), in the 10k test set (an index of it, same
  model), and the test images with a duplicate in the training set, with the kNN accuracy with and without them
  (``simsearch report --queries test`` on the demo index: its data-hygiene section).
* **TrashNet-150**: groups in the whole set (an index of all 2,527 photos with the trained TrashNet model), and
  the 20% test split (seed 0, recorded in the checkpoint) against an index of the other 80%.
* Model-free cross-checks, exhaustive and cheap: images with the same decoded pixels (sha256), and images with
  the same 64-bit pHash (grouped by value, no pairwise table), within and across the splits.

    .venv/bin/python -m bench.hygiene_counts            # needs runs/demo (scripts/demo.sh) and
                                                        # runs/trashnet/model.pt (bench.train_trashnet)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from dataclasses import asdict, replace

import numpy as np

from bench import DEMO_INDEX, REPO
from bench.machine import emit
from engine.build import build_index
from engine.engine import Engine
from engine.reporting import report_for_index
from report import ReportConfig
from similarity.checkpoint import load_checkpoint
from similarity.data import LabelledImages, fashion_mnist_folder, load_labelled_images
from similarity.hygiene import DuplicateRule, image_hashes

REPORT = replace(ReportConfig(), tsne_sample=300, tsne_max_iter=250, examples=0, failures=0, hover_thumbnails=0,
                 silhouette_sample=1000, kmeans_sample=5000)


def pixel_signals(data: LabelledImages) -> tuple[list[str], list[int]]:
    """Every image's decoded-pixel sha256 and pHash, in order."""
    exact, phash = [], []
    for path in data.paths:
        hashes = image_hashes(path)
        exact.append(hashes.exact)
        phash.append(hashes.phash)
    return exact, phash


def same_value_counts(a: list, b: list | None = None) -> dict:
    """Within ``a``: groups of equal values and the images beyond one per group; across: images of ``b`` whose
    value occurs in ``a``."""
    counts = Counter(a)
    out = {"groups": sum(c > 1 for c in counts.values()), "duplicates": sum(c - 1 for c in counts.values() if c > 1)}
    if b is not None:
        out["in_other_set"] = sum(value in counts for value in b)
    return out


def label_conflicts(values: list, labels: np.ndarray) -> int:
    """Groups of equal values whose images carry more than one label."""
    seen: dict = {}
    for value, label in zip(values, labels.tolist()):
        seen.setdefault(value, set()).add(label)
    return sum(len(s) > 1 for s in seen.values())


def index_groups(checkpoint: str, data: LabelledImages, rule: DuplicateRule, workdir: str, name: str) -> dict:
    """Build an index of ``data`` (duplicates kept) and list its duplicate groups."""
    location = os.path.join(workdir, name)
    build_index(checkpoint, data, location, progress=False, duplicates="keep")
    engine = Engine.open(location)
    try:
        found = engine.find_duplicates(rule=rule, pixels=True)
    finally:
        engine.close()
    return found.summary()


def hygiene_of_report(index: str, workdir: str, name: str, queries: str = "test") -> dict:
    started = time.perf_counter()
    result = report_for_index(index, queries=queries, out_dir=os.path.join(workdir, name), config=REPORT,
                              progress=False)
    return {**result.metrics["hygiene"], "report_seconds": round(time.perf_counter() - started, 1),
            "precision_at_1": result.metrics["retrieval"]["precision_at_1"]}


def fashion_mnist(rule: DuplicateRule, workdir: str) -> dict:
    train, test = fashion_mnist_folder("train"), fashion_mnist_folder("test")
    train_exact, train_phash = pixel_signals(train)
    test_exact, test_phash = pixel_signals(test)
    checkpoint = os.path.join(DEMO_INDEX, "model.pt")
    return {
        "model": "the demo model (runs/demo/index/model.pt)",
        "train_index": {"items": len(train), **hygiene_of_report(DEMO_INDEX, workdir, "fm-report")},
        "test_groups": index_groups(checkpoint, test, rule, workdir, "fm-test"),
        "model_free": {
            "same_pixels": {"train": same_value_counts(train_exact),
                            "test": same_value_counts(test_exact, None),
                            "test_in_train": same_value_counts(train_exact, test_exact)["in_other_set"],
                            "label_conflicts_train_test": label_conflicts(train_exact + test_exact,
                                                                          np.concatenate([train.labels,
                                                                                          test.labels]))},
            "same_phash": {"train": same_value_counts(train_phash), "test": same_value_counts(test_phash),
                           "test_in_train": same_value_counts(train_phash, test_phash)["in_other_set"]},
        },
    }


def trashnet(rule: DuplicateRule, workdir: str, checkpoint: str, data_dir: str) -> dict:
    ckpt = load_checkpoint(checkpoint)
    data = load_labelled_images(data_dir)
    test_rows = np.asarray(ckpt.extra["split"]["test"])
    train_rows = np.setdiff1d(np.arange(len(data)), test_rows)
    train_index = os.path.join(workdir, "tn-train")
    build_index(checkpoint, data.subset(train_rows), train_index, progress=False, duplicates="keep")
    exact, phash = pixel_signals(data)
    test_set = set(test_rows.tolist())
    split = [i in test_set for i in range(len(data))]
    return {
        "model": f"{os.path.relpath(checkpoint, REPO)} ({ckpt.config.model.backbone} fine-tuned, "
                 f"{ckpt.preprocess.image_size} px)",
        "images": len(data), "test_images": len(test_rows),
        "all_groups": index_groups(checkpoint, data, rule, workdir, "tn-all"),
        "test_against_train": hygiene_of_report(train_index, workdir, "tn-report"),
        "model_free": {
            "same_pixels": {**same_value_counts(exact),
                            "test_in_train": same_value_counts([v for v, t in zip(exact, split) if not t],
                                                               [v for v, t in zip(exact, split) if t])["in_other_set"],
                            "label_conflicts": label_conflicts(exact, data.labels)},
            "same_phash": {**same_value_counts(phash),
                           "test_in_train": same_value_counts([v for v, t in zip(phash, split) if not t],
                                                              [v for v, t in zip(phash, split) if t])["in_other_set"],
                           "label_conflicts": label_conflicts(phash, data.labels)},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trashnet-checkpoint", default=os.path.join(REPO, "runs", "trashnet", "model.pt"))
    parser.add_argument("--trashnet-data", default=os.path.join(REPO, "..", "shared", "datasets", "trashnet-150"))
    parser.add_argument("--skip-trashnet", action="store_true")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "hygiene_counts.json"))
    args = parser.parse_args()
    rule = DuplicateRule()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hygiene-") as workdir:
        result = {"figure": "duplicates and test-in-gallery leakage in Fashion-MNIST and TrashNet-150",
                  "command": "python -m bench.hygiene_counts", "rule": asdict(rule),
                  "fashion_mnist": fashion_mnist(rule, workdir)}
        if not args.skip_trashnet:
            result["trashnet"] = trashnet(rule, workdir, args.trashnet_checkpoint, args.trashnet_data)
    result["seconds"] = round(time.perf_counter() - started, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()

"""Figure: kNN classification accuracy of the plain majority vote vs the similarity-weighted vote
(``index.majority_vote``), Fashion-MNIST test queries against an index of the training set, for several k.

    .venv/bin/python -m bench.vote_accuracy --index runs/fmnist-index
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.machine import emit
from index import majority_vote
from engine.build import open_index
from similarity.data import fashion_mnist_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", required=True)
    parser.add_argument("--ks", default="1,5,10,20")
    args = parser.parse_args()
    store, checkpoint = open_index(args.index)
    test = fashion_mnist_folder("test")
    queries = checkpoint.embedder().embed_data(test, progress=False).embeddings
    truth = [test.class_names[y] for y in test.labels]
    ks = [int(k) for k in args.ks.split(",")]
    started = time.perf_counter()
    hits = store.search(queries, max(ks))
    search_s = time.perf_counter() - started
    rows = {}
    for k in ks:
        for weighted in (False, True):
            predicted = [majority_vote([n.label for n in h[:k]], [n.similarity for n in h[:k]],
                                       weighted=weighted).label for h in hits]
            rows[f"k={k} {'weighted' if weighted else 'plain'}"] = round(float(np.mean(
                [p == t for p, t in zip(predicted, truth)])), 4)
    emit({"figure": "majority vote vs similarity-weighted vote, Fashion-MNIST test vs train index",
          "command": f"python -m bench.vote_accuracy --index {args.index}", "index_items": len(store),
          "index_type": store.index_type, "queries": len(queries), "search_seconds": round(search_s, 2),
          "accuracy": rows}, "bench/results/vote_accuracy.json")


if __name__ == "__main__":
    main()

"""Time to build the report: for an index directory (what ``simsearch report`` does: load the index, embed
the held-out queries, build), or for a pair of embeddings files.

    python -m bench.report_time --index runs/fmnist-index --queries test --name fashion_mnist

Each ``.npz`` holds ``embeddings`` (n, d) float32 L2-normalised, ``labels`` (n,) int64, ``class_names`` (C,) str,
and optionally ``paths`` (n,) str (image files, for thumbnails) and ``ids`` (n,).

    python -m bench.report_time --gallery-npz gallery.npz --queries-npz test.npz --name fashion_mnist

Prints the result as JSON (with machine info) and writes ``bench/results/report_time_<name>.json``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.machine import emit
from report import EmbeddingSet, ReportConfig, build_report

RESULTS = Path(__file__).resolve().parent / "results"


def load_embedding_set(path: str | Path) -> EmbeddingSet:
    """An :class:`EmbeddingSet` from an ``.npz`` with keys embeddings, labels, class_names[, paths, ids]."""
    with np.load(path, allow_pickle=False) as data:
        missing = {"embeddings", "labels", "class_names"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: missing keys {sorted(missing)}")
        return EmbeddingSet(
            embeddings=data["embeddings"], labels=data["labels"],
            class_names=[str(name) for name in data["class_names"]],
            paths=[str(p) for p in data["paths"]] if "paths" in data.files else None,
            ids=data["ids"] if "ids" in data.files else None,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", help="index directory: time the whole `simsearch report` job")
    parser.add_argument("--queries", default="test", help="with --index: test | FOLDER | none")
    parser.add_argument("--gallery-npz")
    parser.add_argument("--queries-npz", help="held-out queries; leave-one-out within the gallery if omitted")
    parser.add_argument("--name", help="result name (default: the gallery file's stem)")
    parser.add_argument("--report-dir", help="where to write the report (default: a temporary folder)")
    parser.add_argument("--out", help="result JSON (default: bench/results/report_time_<name>.json)")
    parser.add_argument("--tsne-sample", type=int, default=ReportConfig.tsne_sample)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=ReportConfig.threads, help="BLAS/OpenMP threads")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.index:
        return time_index_report(args)
    if not args.gallery_npz:
        raise SystemExit("give --index DIR or --gallery-npz FILE")
    name = args.name or Path(args.gallery_npz).stem
    start = time.perf_counter()
    gallery = load_embedding_set(args.gallery_npz)
    queries = load_embedding_set(args.queries_npz) if args.queries_npz else None
    load_s = time.perf_counter() - start
    config = replace(ReportConfig(), tsne_sample=args.tsne_sample, seed=args.seed, threads=args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = Path(args.report_dir or scratch)
        start = time.perf_counter()
        result = build_report(gallery, queries, out_dir, config=config, progress=not args.no_progress,
                              info={"bench": name})
        total_s = time.perf_counter() - start
        html_mib = result.html_path.stat().st_size / 2**20
    summary = {
        "benchmark": "report_time", "name": name,
        "gallery": len(gallery), "queries": len(queries) if queries is not None else None,
        "dim": int(gallery.embeddings.shape[1]), "classes": gallery.num_classes,
        "with_thumbnails": gallery.paths is not None,
        "config": config.to_dict(),
        "load_s": round(load_s, 3), "report_s": round(total_s, 3), "steps_s": result.metrics["timings_s"],
        "html_mib": round(html_mib, 2),
        "retrieval": result.metrics["retrieval"], "cluster": result.metrics["cluster"],
    }
    emit(summary, args.out or str(RESULTS / f"report_time_{name}.json"))
    return summary


def time_index_report(args: argparse.Namespace) -> dict:
    from engine.reporting import report_for_index

    name = args.name or Path(args.index).name
    config = replace(ReportConfig(), tsne_sample=args.tsne_sample, seed=args.seed, threads=args.threads)
    start = time.perf_counter()
    result = report_for_index(args.index, queries=None if args.queries == "none" else args.queries,
                              out_dir=args.report_dir, config=config, progress=not args.no_progress)
    total_s = time.perf_counter() - start
    summary = {
        "benchmark": "report_time", "name": name, "command": f"python -m bench.report_time --index {args.index} "
        f"--queries {args.queries} --tsne-sample {args.tsne_sample} --threads {args.threads}",
        "index": args.index, "queries": args.queries, "config": config.to_dict(),
        "total_s_including_load_and_query_embedding": round(total_s, 2), "steps_s": result.metrics["timings_s"],
        "html": str(result.html_path), "html_mib": round(result.html_path.stat().st_size / 2**20, 2),
        "retrieval": result.metrics["retrieval"], "cluster": result.metrics["cluster"],
    }
    emit(summary, args.out or str(RESULTS / f"report_time_{name}.json"))
    return summary


if __name__ == "__main__":
    main()

"""``simsearch report --index DIR``: t-SNE, cluster and retrieval quality as one HTML file + JSON."""

from __future__ import annotations

import argparse
import json

from report import ReportConfig


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="write the embedding-quality report (HTML + JSON)")
    p.add_argument("--index", required=True, help="index directory (the gallery)")
    p.add_argument("--checkpoint", help="checkpoint (default: the one stored in the index)")
    p.add_argument("--queries", default="test",
                   help="'test' (the checkpoint's held-out split), a folder/CSV of images, or 'none' for "
                        "leave-one-out within the index (default: test)")
    p.add_argument("--out", help="output folder (default: INDEX/report, served by the API at /report)")
    p.add_argument("--tsne-sample", type=int, default=5000, help="points in the t-SNE map")
    p.add_argument("-k", type=int, default=10, help="neighbours in the kNN vote")
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from simsearch.reporting import report_for_index

    config = ReportConfig(k=args.k, tsne_sample=args.tsne_sample, threads=args.threads, seed=args.seed)
    queries = None if args.queries == "none" else args.queries
    result = report_for_index(args.index, checkpoint=args.checkpoint, queries=queries, out_dir=args.out,
                              config=config, progress=not args.quiet)
    summary = {"html": str(result.html_path), "json": str(result.json_path)}
    summary.update({k: v for k, v in result.metrics.get("retrieval", {}).items() if isinstance(v, (int, float))})
    print(json.dumps(summary, indent=2))
    return 0

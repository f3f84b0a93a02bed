"""``simsearch report --index DIR``: t-SNE, cluster and retrieval quality as one HTML file + JSON."""

from __future__ import annotations

import argparse
import json

from engine.reporting import ReportConfig, report_for_index
from simsearch.runtime_args import add_runtime_arguments, runtime_from_args

DEFAULTS = ReportConfig()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="write the embedding-quality report (HTML + JSON)")
    p.add_argument("--index", required=True, help="index directory (the gallery)")
    p.add_argument("--checkpoint", help="checkpoint (default: the one stored in the index)")
    p.add_argument("--queries", default="test",
                   help="'test' (the checkpoint's held-out split), a folder/CSV of images, or 'none' for "
                        "leave-one-out within the index (default: test)")
    p.add_argument("--out", help="output folder (default: INDEX/report, served by the API at /report)")
    p.add_argument("--tsne-sample", type=int, default=DEFAULTS.tsne_sample,
                   help="points in the t-SNE map (default %(default)s)")
    p.add_argument("-k", type=int, default=DEFAULTS.k, help="neighbours in the kNN vote (default %(default)s)")
    p.add_argument("--threads", type=int, default=DEFAULTS.threads, help="BLAS/OpenMP threads (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--duplicates-sample", type=int, default=DEFAULTS.hygiene_sample,
                   help="gallery items whose neighbours the duplicate search visits, a seeded sample (default "
                        "%(default)s; `simsearch index dedup` visits them all)")
    p.add_argument("--no-duplicates", action="store_true",
                   help="skip the search for duplicate groups inside the gallery (leakage of the queries is "
                        "still checked)")
    add_runtime_arguments(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    config = ReportConfig(k=args.k, tsne_sample=args.tsne_sample, threads=args.threads, seed=args.seed,
                          hygiene=not args.no_duplicates, hygiene_sample=args.duplicates_sample)
    queries = None if args.queries == "none" else args.queries
    result = report_for_index(args.index, checkpoint=args.checkpoint, queries=queries, out_dir=args.out,
                              config=config, progress=not args.quiet, runtime=runtime_from_args(args))
    summary = {"html": str(result.html_path), "json": str(result.json_path)}
    summary.update({k: v for k, v in result.metrics.get("retrieval", {}).items() if isinstance(v, (int, float))})
    hygiene = result.metrics.get("hygiene", {})
    summary.update({f"leakage.{k}": v for k, v in (hygiene.get("leakage") or {}).items()})
    summary.update({f"duplicates.{k}": v for k, v in (hygiene.get("gallery_duplicates") or {}).items()})
    print(json.dumps(summary, indent=2))
    return 0

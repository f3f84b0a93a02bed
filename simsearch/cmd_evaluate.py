"""``simsearch evaluate --old INDEX --new INDEX (--queries DATA | --copies N | --from-log DIR)``: shadow evaluation of a
re-embedded index against the index it copies (see :mod:`engine.evaluate`)."""

from __future__ import annotations

import argparse

from api.querylog import read_query_log
from engine.evaluate import EvaluationConfig, TrafficQuery, evaluate_indexes
from similarity.data import fashion_mnist_folder
from simsearch.cli import UserError
from simsearch.runtime_args import add_runtime_arguments, runtime_from_args

FASHION_MNIST_SPLITS = {"fashion-mnist": "train", "fashion-mnist-test": "test"}

DEFAULTS = EvaluationConfig()


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="compare an index with its re-embedded copy (shadow evaluation)",
                              description="Compare the index served with the old model (--old) with the same items "
                                          "embedded by a new model (--new): retrieval quality with confidence "
                                          "intervals on labelled queries, or how the answers to logged queries "
                                          "change; latency of both; a verdict that `simsearch alias set` reads.")
    p.add_argument("--old", required=True, metavar="INDEX", help="the index served now (the old model)")
    p.add_argument("--new", required=True, metavar="INDEX", help="the re-embedded index (the new model)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--queries", metavar="DATA",
                        help="labelled query images: a folder with one sub-folder per class, a CSV of path,label, "
                             "or fashion-mnist-test (the 10k test images, with the data set's class names)")
    source.add_argument("--copies", type=int, metavar="N",
                        help="no labels needed: an edited copy of each of N sampled indexed images, searched for its "
                             "original on both indexes (copy recall@1)")
    source.add_argument("--from-log", metavar="DIR",
                        help="images logged by `simsearch serve --log-queries DIR`, replayed on both indexes")
    p.add_argument("-k", "--k", type=int, default=DEFAULTS.k,
                   help="neighbours searched and voted (default %(default)s)")
    p.add_argument("--out", metavar="DIR",
                   help="folder for evaluation.json and evaluation.html (default: NEW's home/evaluation)")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="use a seeded sample of N queries (default: all)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of the samples and the bootstrap")
    p.add_argument("--resamples", type=int, default=DEFAULTS.resamples,
                   help="bootstrap resamples of the confidence intervals (default %(default)s)")
    add_runtime_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.onnx:
        raise UserError("--onnx names one model's ONNX file; evaluate runs two models (use --runtime)")
    config = EvaluationConfig(k=args.k, seed=args.seed, sample=args.sample, resamples=args.resamples)
    traffic = None
    if args.from_log is not None:
        traffic = [TrafficQuery(q.image_path, q.label) for q in read_query_log(args.from_log)]
    queries = args.queries
    if queries in FASHION_MNIST_SPLITS:  # the class names of the data set, as the index holds them
        queries = fashion_mnist_folder(FASHION_MNIST_SPLITS[queries])
    result = evaluate_indexes(args.old, args.new, queries=queries, traffic=traffic, traffic_source=args.from_log,
                              copies=args.copies, out_dir=args.out, config=config, runtime=runtime_from_args(args),
                              progress=not args.quiet)
    for line in summary_lines(result.evaluation):
        print(line)
    print(f"report: {result.html_path}")
    return 0


def summary_lines(evaluation: dict) -> list[str]:
    """A few lines for people: each metric old -> new with its interval, the latency, the verdict."""
    lines = []
    queries = evaluation["queries"]
    lines.append(f"queries: {queries['used']} used ({queries['kind']}), {queries['skipped']} skipped"
                 + (f", {queries['label_not_in_index']} with a label not in both indexes"
                    if queries.get("label_not_in_index") else ""))
    scored = evaluation.get("labelled") or evaluation.get("copies")
    if scored:
        percent = f"{scored['confidence']:.0%}"
        for found in scored["metrics"].values():
            if found["old"] is None:
                continue
            old, new, diff = found["old"], found["new"], found["difference"]
            lines.append(f"{found['name']}: {old['value']:.4f} -> {new['value']:.4f}  ({diff['value']:+.4f}, "
                         f"{percent} CI [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}])")
        changes, what = ((scored["knn_changes"], "kNN queries") if "knn_changes" in scored
                         else (scored["found_changes"], "copies found first"))
        lines.append(f"{what} gained {changes['gained']}, lost {changes['lost']} "
                     f"(McNemar p = {changes['mcnemar_p_value']:.3g})")
    traffic = evaluation.get("traffic")
    if traffic:
        overlap, agree = traffic["overlap"], traffic["vote_agreement"]
        lines.append(f"top-{evaluation['settings']['k']} overlap: {overlap['value']:.4f} "
                     f"(CI [{overlap['ci_low']:.4f}, {overlap['ci_high']:.4f}]), votes agree: {agree['value']:.4f}")
    latency = evaluation["latency_ms"]
    if latency["old"]["searches"]:
        lines.append(f"latency p50/p95 ms: old {latency['old']['p50']:.1f}/{latency['old']['p95']:.1f}, "
                     f"new {latency['new']['p50']:.1f}/{latency['new']['p95']:.1f}")
    lines.append(f"verdict: {evaluation['verdict']} ({evaluation['verdict_reason']})")
    return lines

"""``simsearch query IMAGE... --index INDEX [--label L]``: nearest indexed images and their majority vote (the
neighbours only on an index without labels)."""

from __future__ import annotations

import argparse
import json

from engine.engine import Engine
from index import Vote
from simsearch.runtime_args import add_runtime_arguments, runtime_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("query", help="search an index with one or more images")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--index", required=True,
                   help="index directory, milvus://HOST:PORT/COLLECTION, or a Milvus Lite PATH.db")
    p.add_argument("--checkpoint", help="checkpoint (default: the one stored in the index)")
    p.add_argument("-k", type=int, default=10, help="neighbors to return (default 10)")
    p.add_argument("--label", default=None, help="only neighbors of this class")
    p.add_argument("--weighted", action="store_true", help="similarity-weighted vote")
    p.add_argument("--unknown-below", type=float, default=None,
                   help="answer 'unknown' when the winner's best cosine is below this")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_runtime_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    engine = Engine.open(args.index, args.checkpoint, runtime=runtime_from_args(args))
    try:
        results = engine.search(args.images, k=args.k, weighted=args.weighted, unknown_below=args.unknown_below,
                                names=args.images, label=args.label)
    finally:
        engine.close()
    if args.json:
        print(json.dumps([{"image": image, "prediction": _prediction(r.vote),
                           "neighbors": [n.to_dict() for n in r.neighbors]}
                          for image, r in zip(args.images, results)], indent=2))
        return 0
    for image, r in zip(args.images, results):
        if r.vote is None:  # no neighbour carries a label: neighbours only
            print(f"{image}:")
        else:
            guess = "unknown" if r.vote.is_unknown else r.vote.label
            print(f"{image}: {guess} (confidence {r.vote.confidence:.2f}; votes {r.vote.votes})")
        for rank, n in enumerate(r.neighbors, 1):
            label = f"{n.label:<16} " if n.label else ""
            print(f"  {rank:>3}. id={n.id:<7} {label}cos={n.similarity:+.4f} score={n.score:.4f}  {n.path}")
    return 0


def _prediction(vote: Vote | None) -> dict | None:
    """The vote as printed by ``--json``; None without one (no neighbour carries a label)."""
    if vote is None:
        return None
    return {"label": vote.label, "confidence": vote.confidence, "votes": vote.votes, "unknown": vote.is_unknown}

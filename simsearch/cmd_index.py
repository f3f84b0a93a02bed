"""``simsearch index ...``: build an index from images with a checkpoint, grow it, shrink it, inspect it.

    simsearch index build --checkpoint runs/x/model.pt --data IMAGES --out DIR [--type auto|flat|hnsw|ivfpq]
    simsearch index add DIR --data IMAGES            (a folder of class folders or a CSV of path,label)
    simsearch index remove DIR ID [ID ...]
    simsearch index compact DIR [--force]
    simsearch index stats DIR
"""

from __future__ import annotations

import argparse
import json
import sys

from index import IndexConfig, IndexStore
from similarity.data import LabelledImages, load_labelled_images


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("index", help="build, grow, shrink and inspect a FAISS index directory")
    commands = parser.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    build = commands.add_parser("build", help="embed a labelled image collection into a new index")
    build.add_argument("--checkpoint", required=True, help="trained model (model.pt)")
    build.add_argument("--data", required=True,
                       help="folder of class folders, CSV of path,label, or 'fashion-mnist' (train split as PNGs)")
    build.add_argument("--out", required=True, help="new index directory")
    build.add_argument("--type", default="auto", choices=["auto", "flat", "hnsw", "ivfpq"],
                       help="auto: exact below 200k images, then HNSW within the memory budget, else IVF-PQ")
    build.add_argument("--memory-budget-gb", type=float, default=4.0, help="for --type auto")
    build.add_argument("--batch-size", type=int, default=256)
    build.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    build.add_argument("--quiet", action="store_true")
    build.set_defaults(func=_build)

    add = commands.add_parser("add", help="embed more images and append them (no rebuild)")
    add.add_argument("directory")
    add.add_argument("--data", required=True, help="folder of class folders or CSV of path,label")
    add.add_argument("--checkpoint", help="default: the index's own model.pt")
    add.add_argument("--workers", type=int, default=2)
    add.add_argument("--quiet", action="store_true")
    add.set_defaults(func=_add)

    remove = commands.add_parser("remove", help="delete items by id (no rebuild)")
    remove.add_argument("directory")
    remove.add_argument("ids", type=int, nargs="+")
    remove.set_defaults(func=_remove)

    compact = commands.add_parser("compact", help="rebuild an HNSW graph without its deleted vectors")
    compact.add_argument("directory")
    compact.add_argument("--force", action="store_true", help="even below the tombstone threshold")
    compact.set_defaults(func=_compact)

    stats = commands.add_parser("stats", help="print counts, index type and model info as JSON")
    stats.add_argument("directory")
    stats.set_defaults(func=_stats)
    return parser


def run(args: argparse.Namespace) -> int:
    return args.func(args)


def _collection(spec: str) -> LabelledImages:
    if spec == "fashion-mnist":
        from simsearch.reporting import fashion_mnist_folder

        return fashion_mnist_folder("train")
    return load_labelled_images(spec)


def _report_skipped(skipped) -> None:
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):", file=sys.stderr)
        for item in skipped:
            print(f"  {item.reason}", file=sys.stderr)


def _build(args: argparse.Namespace) -> int:
    from simsearch.pipeline import build_index

    data = _collection(args.data)
    _report_skipped(data.skipped)
    config = IndexConfig(index_type=args.type, memory_budget_bytes=int(args.memory_budget_gb * 2**30))
    summary = build_index(args.checkpoint, data, args.out, config=config, batch_size=args.batch_size,
                          num_workers=args.workers, progress=not args.quiet)
    _report_skipped(summary.skipped)
    print(json.dumps({"index": summary.directory, "added": summary.added, "skipped": len(summary.skipped),
                      "type": summary.index_type, "embed_seconds": round(summary.embed_seconds, 1),
                      "images_per_second": round(summary.images_per_second, 1)}, indent=2))
    return 0


def _add(args: argparse.Namespace) -> int:
    from simsearch.pipeline import add_images, checkpoint_for, open_index

    checkpoint = checkpoint_for(args.directory, args.checkpoint)
    store = open_index(args.directory, checkpoint)
    data = load_labelled_images(args.data)
    ids, skipped = add_images(store, checkpoint.embedder(), data, num_workers=args.workers,
                              progress=not args.quiet)
    store.save()
    _report_skipped(data.skipped + skipped)
    print(json.dumps({"added": len(ids), "first_id": int(ids[0]) if len(ids) else None,
                      "last_id": int(ids[-1]) if len(ids) else None, "ntotal": len(store)}))
    return 0


def _remove(args: argparse.Namespace) -> int:
    store = IndexStore.open(args.directory)
    removed = store.remove(args.ids)
    store.save()
    print(f"removed {removed} of {len(args.ids)} id(s)", file=sys.stderr)
    return 0


def _compact(args: argparse.Namespace) -> int:
    store = IndexStore.open(args.directory)
    if store.compact(force=args.force):
        store.save()
        print("compacted", file=sys.stderr)
    else:
        print("nothing to compact", file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace) -> int:
    print(json.dumps(IndexStore.open(args.directory).stats(), indent=2))
    return 0

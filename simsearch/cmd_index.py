"""``simsearch index ...``: build an index from images with a checkpoint, grow it, shrink it, inspect it.

    simsearch index build --checkpoint runs/x/model.pt --data IMAGES --out INDEX [--type auto|flat|hnsw|ivfpq]
                          [--copy-model runs/copies/model.pt] [--duplicates keep|skip|flag]
                          [--runtime torch|onnx|auto [--onnx PATH]]
    simsearch index add INDEX --data IMAGES [--duplicates keep|skip|flag]   (class folders, a CSV or a flat folder)
    simsearch index remove INDEX ID [ID ...]
    simsearch index compact INDEX [--force] [--orphan-grace SECONDS]   (the index, then orphan upload files)
    simsearch index stats INDEX
    simsearch index dedup INDEX [--threshold C] [--pixels [--phash-bits B] [--min-inliers N]] [--remove] [--out DIR]
                                (dry run unless --remove; --remove decodes the pixels and deletes confirmed copies only)
    simsearch index dedup INDEX --queries DIR [--out DIR]   (the copies of each image file of DIR in the index)
    simsearch index copy SOURCE MILVUS [--home DIR]  (an index directory into Milvus, ids kept, no re-embedding)
    simsearch index drop MILVUS --yes
    simsearch index migrate DIR                      (once, for an index made by simsearch 0.1)
    simsearch index backup INDEX DEST                (while servers write; a Milvus collection: milvus-backup)
    simsearch index restore DEST INDEX               (into a new folder; sha256 checked)
    simsearch index check INDEX [--repair]           (damaged database pages or snapshots; exit 1 when damaged)
    simsearch index reembed INDEX --checkpoint NEW.pt --out NEW_INDEX   (while INDEX serves; resumes after a kill)

INDEX is an index directory (the embedded store, the default), or a Milvus collection:
``milvus://HOST:PORT/COLLECTION`` (``milvus+tls://`` for TLS; the token in ``$SIMSEARCH_MILVUS_TOKEN``) or a
Milvus Lite data directory ``PATH.db``.  Every command may run while a server and other commands write the
same index: each write is durable when the command prints its answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from durablefile import atomic_write
from engine.backup import BackupError, backup_index, restore_index
from engine.build import build_index, copy_index, drop_index
from engine.copies import find_copies_of_files, image_files
from engine.dedup import DEFAULT_NEIGHBOURS
from engine.duplicate_rule import (CALIBRATION_QUANTILE, CANDIDATE_COSINE, DEFAULT_DESCRIPTOR_COSINE,
                                   DENSE_MIN_CORRELATION)
from engine.engine import ORPHAN_GRACE_S, Engine
from engine.lifecycle import CHUNK, reembed
from engine.live import LiveEngine
from engine.ingestion import DEFAULT_POLICY, DUPLICATE_POLICIES
from engine.layout import DEDUP_DIR
from engine.reporting import write_duplicates
from index import INDEX_TYPES, IndexConfig
from index.check import check_store, looks_like_index, repair_store
from index.migrate import migrate_legacy as migrate_index
from similarity.data import fashion_mnist_folder, load_images
from similarity.hygiene import DuplicateRule
from simsearch.cli import UserError
from simsearch.runtime_args import add_runtime_arguments, runtime_from_args

INDEX_HELP = "index directory, milvus://HOST:PORT/COLLECTION, or a Milvus Lite PATH.db"
DUPLICATES_HELP = ("images that duplicate an indexed one or an earlier one of the batch (the rule of 'index dedup': "
                   "same pixels, or an embedding candidate confirmed by pHash or local verification): keep (store, "
                   "unchecked), flag (store and count) or skip (leave out)")
QUERIES_FILE = "queries.json"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("index", help="build, grow, shrink and inspect an index")
    commands = parser.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    defaults = IndexConfig()

    build = commands.add_parser("build", help="embed an image collection (labelled or not) into a new index")
    build.add_argument("--checkpoint", required=True, help="trained model (model.pt)")
    build.add_argument("--data", required=True,
                       help="folder of class folders, CSV of path,label, a flat folder of images without labels, or "
                            "'fashion-mnist' (train split as PNGs)")
    build.add_argument("--out", required=True, help=f"the new index: {INDEX_HELP}")
    build.add_argument("--home", default=None,
                       help="Milvus only: folder for model.pt and uploads that every API server reaches "
                            "(default: ./runs/milvus/COLLECTION, or PATH-files beside a Milvus Lite PATH.db)")
    build.add_argument("--copy-model", default=None, metavar="MODEL.pt",
                       help="a copy descriptor (train --objective copies) whose vector every item carries beside "
                            "the class embedding; duplicates are then found with it (an index directory only)")
    build.add_argument("--type", default=defaults.index_type, choices=INDEX_TYPES,
                       help="auto: exact below 200k images, then HNSW within the memory budget, else IVF-PQ")
    build.add_argument("--memory-budget-gb", type=float, default=defaults.memory_budget_bytes / 2**30,
                       help="for --type auto")
    build.add_argument("--batch-size", type=int, default=256)
    build.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    build.add_argument("--duplicates", default=DEFAULT_POLICY, choices=DUPLICATE_POLICIES, help=DUPLICATES_HELP)
    add_runtime_arguments(build)
    build.add_argument("--quiet", action="store_true")
    build.set_defaults(func=_build)

    add = commands.add_parser("add", help="embed more images and append them (no rebuild)")
    add.add_argument("index", metavar="INDEX", help=INDEX_HELP)
    add.add_argument("--data", required=True,
                     help="folder of class folders, CSV of path,label, or a flat folder of images without labels")
    add.add_argument("--checkpoint", help="default: the index's own model.pt")
    add.add_argument("--workers", type=int, default=2)
    add.add_argument("--duplicates", default=DEFAULT_POLICY, choices=DUPLICATE_POLICIES, help=DUPLICATES_HELP)
    add_runtime_arguments(add)
    add.add_argument("--quiet", action="store_true")
    add.set_defaults(func=_add)

    remove = commands.add_parser("remove", help="delete items by id (no rebuild)")
    remove.add_argument("index", metavar="INDEX", help=INDEX_HELP)
    remove.add_argument("ids", type=int, nargs="+")
    remove.set_defaults(func=_remove)

    compact_help = ("compact the index and remove orphan upload files: an index directory writes a snapshot of "
                    "its FAISS index, rebuilt without deleted vectors when due; Milvus is asked to compact its "
                    "segments; upload files no item references are deleted")
    compact = commands.add_parser("compact", help=compact_help, description=compact_help)
    compact.add_argument("index", metavar="INDEX", help=INDEX_HELP)
    compact.add_argument("--force", action="store_true",
                         help="rebuild even below the tombstone threshold (index directories)")
    compact.add_argument("--orphan-grace", type=float, default=ORPHAN_GRACE_S, metavar="SECONDS",
                         help="keep unreferenced upload files younger than this (an add may be in flight)")
    compact.set_defaults(func=_compact)

    stats = commands.add_parser("stats", help="print counts, index type, log and snapshot state as JSON")
    stats.add_argument("index", metavar="INDEX", help=INDEX_HELP)
    stats.set_defaults(func=_stats)

    dedup_help = ("list duplicate groups (JSON and an HTML page of thumbnails); with --remove, delete the members "
                  "pixel evidence confirms (same pixels, pHash, local verification) and keep the oldest item of each "
                  "group and every unconfirmed member; with --queries, list the copies of outside files instead")
    dedup = commands.add_parser("dedup", help=dedup_help, description=dedup_help)
    dedup.add_argument("index", metavar="INDEX", help=INDEX_HELP)
    dedup.add_argument("--threshold", type=float, default=None, metavar="C",
                       help=f"embedding cosine at or above which two items are candidates (default: "
                            f"{DuplicateRule().cosine}; {CANDIDATE_COSINE} for a copy descriptor, or the threshold its "
                            "training measured at 90%% precision where lower)")
    dedup.add_argument("--neighbours", type=int, default=DEFAULT_NEIGHBOURS, metavar="K",
                       help="nearest neighbours examined per item")
    dedup.add_argument("--pixels", action="store_true",
                       help="judge candidates by their pixels: same decoded pixels, pHash within --phash-bits, or "
                            "local verification (decodes the candidates' files). Without it the embedding alone "
                            "decides: --descriptor-cosine, else only a cosine identical pixels give")
    dedup.add_argument("--phash-bits", type=int, default=DuplicateRule().phash_bits, metavar="B",
                       help="most pHash bits (of 64) two copies may differ by")
    dedup.add_argument("--min-inliers", type=int, default=DuplicateRule().min_inliers, metavar="N",
                       help="RANSAC inliers of local verification that make a candidate a copy (0: no verification)")
    dedup.add_argument("--min-correlation", type=float, default=None, metavar="R",
                       help="verify candidates under 64 px densely (off by default): the aligned correlation (up "
                            "to 1) a query's best-aligned candidate must reach, with a misalignment under a quarter "
                            f"of the next one's ({DENSE_MIN_CORRELATION} measured on Fashion-MNIST; about 3 ms a "
                            "candidate)")
    dedup.add_argument("--descriptor-cosine", type=float, default=None, metavar="C",
                       help="for a model trained for copies: the cosine at or above which a pair is a copy on the "
                            f"embedding alone (default: {DEFAULT_DESCRIPTOR_COSINE}, measured at 1%% false matches, "
                            f"or the index's calibrated cosine where higher: the {100 * CALIBRATION_QUANTILE:g}th "
                            "percentile of its items' cosines to their nearest other item; none for a model trained "
                            "on classes)")
    dedup.add_argument("--remove", action="store_true",
                       help="delete the confirmed duplicates (default: a dry run). Decodes the pixels even without "
                            "--pixels: what no pixel evidence confirms is listed as unconfirmed and kept")
    dedup.add_argument("--queries", default=None, metavar="DIR",
                       help="instead of the index's own groups: for each image file under DIR (recursively), its "
                            f"copies in the index with their evidence (printed, and written to OUT/{QUERIES_FILE})")
    dedup.add_argument("--out", default=None, help=f"folder for the listing (default: INDEX/{DEDUP_DIR})")
    dedup.add_argument("--thumbnails", type=int, default=200, metavar="N", help="groups shown on the HTML page")
    dedup.set_defaults(func=_dedup)

    copy = commands.add_parser("copy", help="copy an index into a new Milvus collection (ids, labels, paths and "
                                            "vectors kept; nothing re-embedded)")
    copy.add_argument("source", metavar="SOURCE", help=INDEX_HELP)
    copy.add_argument("target", metavar="MILVUS", help="milvus://HOST:PORT/COLLECTION or PATH.db (must not exist)")
    copy.add_argument("--home", default=None, help="folder for model.pt and uploads (default as for build)")
    copy.add_argument("--type", default=None, choices=INDEX_TYPES, help="default: the source's index type")
    copy.add_argument("--quiet", action="store_true")
    copy.set_defaults(func=_copy)

    drop = commands.add_parser("drop", help="delete a Milvus collection (its home folder is left alone)")
    drop.add_argument("target", metavar="MILVUS")
    drop.add_argument("--yes", action="store_true", help="really drop it")
    drop.set_defaults(func=_drop)

    migrate = commands.add_parser("migrate", help="convert an index made by simsearch 0.1 (manifest.json) "
                                                  "to the current layout, once")
    migrate.add_argument("directory")
    migrate.set_defaults(func=_migrate)

    backup = commands.add_parser("backup", help="back up an index directory while servers write to it: its "
                                                "database at one log position, snapshots, model.pt and uploads")
    backup.add_argument("index", metavar="INDEX", help="index directory (a Milvus collection: use milvus-backup)")
    backup.add_argument("dest", metavar="DEST", help="the backup folder (must not exist)")
    backup.set_defaults(func=_backup)

    restore = commands.add_parser("restore", help="restore a backup as a new index directory (sha256 checked)")
    restore.add_argument("backup", metavar="DEST", help="a folder written by 'simsearch index backup'")
    restore.add_argument("index", metavar="INDEX", help="the new index directory (must not exist, or be empty)")
    restore.set_defaults(func=_restore)

    check = commands.add_parser("check", help="say what is damaged in an index directory (SQLite quick_check, "
                                              "snapshot sha256) and what can be recovered; exit 1 when damaged")
    check.add_argument("index", metavar="INDEX", help="index directory")
    check.add_argument("--repair", action="store_true", help="recover what can be recovered in place: a new "
                       "snapshot from the database; a new database from its rows when its pages are damaged but "
                       "every row reads back (the damaged files are kept in damaged-TIME/)")
    check.set_defaults(func=_check)

    reembed = commands.add_parser("reembed", help="re-embed an index's images with another checkpoint into a new "
                                                  "index, while the old one serves; writes made meanwhile are "
                                                  "carried over; rerun to resume after a kill")
    reembed.add_argument("index", metavar="INDEX", help=f"the index in use: {INDEX_HELP}, or an alias")
    reembed.add_argument("--checkpoint", required=True, help="the new model (model.pt)")
    reembed.add_argument("--out", required=True, help=f"the new index: {INDEX_HELP}")
    reembed.add_argument("--home", default=None, help="Milvus only: folder for model.pt and uploads")
    reembed.add_argument("--type", choices=INDEX_TYPES, default=None,
                         help="index type of the new index (default: the old one's)")
    reembed.add_argument("--batch-size", type=int, default=256)
    reembed.add_argument("--workers", type=int, default=0, help="DataLoader workers for decoding")
    reembed.add_argument("--chunk", type=int, default=CHUNK,
                         help="images embedded and committed per step (a kill loses at most one step)")
    reembed.add_argument("--quiet", action="store_true", help="no progress bar")
    add_runtime_arguments(reembed)
    reembed.set_defaults(func=_reembed)
    return parser


def run(args: argparse.Namespace) -> int:
    return args.func(args)


def _collection(spec: str):
    if spec == "fashion-mnist":
        return fashion_mnist_folder("train")
    return load_images(spec, min_per_class=1)  # indexing needs no pairs; a flat folder has no labels


def _report_skipped(skipped) -> None:
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):", file=sys.stderr)
        for item in skipped:
            print(f"  {item.reason}", file=sys.stderr)


def _build(args: argparse.Namespace) -> int:
    data = _collection(args.data)
    _report_skipped(data.skipped)
    config = IndexConfig(index_type=args.type, memory_budget_bytes=int(args.memory_budget_gb * 2**30))
    summary = build_index(args.checkpoint, data, args.out, config=config, batch_size=args.batch_size,
                          num_workers=args.workers, progress=not args.quiet, home=args.home,
                          duplicates=args.duplicates, runtime=runtime_from_args(args),
                          copy_checkpoint_path=args.copy_model)
    _report_skipped(summary.skipped)
    print(json.dumps({"index": summary.directory, "added": summary.added, "skipped": len(summary.skipped),
                      "type": summary.index_type, "embed_seconds": round(summary.embed_seconds, 1),
                      "images_per_second": round(summary.images_per_second, 1),
                      "duplicates": summary.duplicates.to_dict()}, indent=2))
    return 0


def _add(args: argparse.Namespace) -> int:
    live = LiveEngine(args.index, args.checkpoint, runtime=runtime_from_args(args))  # follows an alias's switch
    try:
        data = load_images(args.data, min_per_class=1)  # indexing needs no pairs; a flat folder has no labels
        ids, skipped, duplicates = live.write(lambda engine: engine.add_collection(
            data, num_workers=args.workers, progress=not args.quiet, duplicates=args.duplicates))
        total = len(live.engine)
    finally:
        live.close()
    _report_skipped(data.skipped + skipped)
    print(json.dumps({"added": len(ids), "first_id": int(ids[0]) if len(ids) else None,
                      "last_id": int(ids[-1]) if len(ids) else None, "ntotal": total,
                      "duplicates": duplicates.to_dict()}))
    return 0


def _remove(args: argparse.Namespace) -> int:
    live = LiveEngine(args.index)
    try:
        gone = live.write(lambda engine: engine.delete(args.ids))
    finally:
        live.close()
    print(json.dumps({"removed": [item.id for item in gone], "requested": len(args.ids)}))
    return 0


def _compact(args: argparse.Namespace) -> int:
    engine = Engine.open(args.index)
    try:
        result = engine.compact(force=args.force, orphan_grace_s=args.orphan_grace)
    finally:
        engine.close()
    print(json.dumps(result))
    return 0


def _stats(args: argparse.Namespace) -> int:
    engine = Engine.open(args.index)
    try:
        print(json.dumps(engine.stats(), indent=2))
    finally:
        engine.close()
    return 0


def _dedup(args: argparse.Namespace) -> int:
    if args.queries is not None and args.remove:
        raise UserError("index dedup: --remove deletes within the index; it does not combine with --queries")
    pixels = args.pixels or args.remove  # a removal rests on pixel evidence
    engine = Engine.open(args.index)
    try:
        rule = engine.duplicate_rule_with(cosine=args.threshold, descriptor_cosine=args.descriptor_cosine,
                                          phash_bits=args.phash_bits, min_inliers=args.min_inliers or None,
                                          min_correlation=args.min_correlation)
        if args.queries is not None:
            return _dedup_queries(args, engine, rule)
        report = engine.find_duplicates(rule=rule, neighbours=args.neighbours, pixels=pixels, confirm=args.remove)
        out = args.out or os.path.join(engine.directory, DEDUP_DIR)
        json_path, html_path = write_duplicates(report, out, thumbnails=args.thumbnails)
        doomed = report.duplicates
        removed = [item.id for item in engine.delete(doomed)] if args.remove and doomed else []
    finally:
        engine.close()
    result = {**report.summary(), "json": json_path, "html": html_path, "dry_run": not args.remove}
    result["removed" if args.remove else "would_remove"] = removed if args.remove else doomed
    result["unconfirmed_kept"] = report.unconfirmed
    print(json.dumps(result))
    return 0


def _dedup_queries(args: argparse.Namespace, engine: Engine, rule: DuplicateRule) -> int:
    paths = image_files(args.queries)
    found = find_copies_of_files(engine, paths, rule=rule, neighbours=args.neighbours)
    out = args.out or os.path.join(engine.directory, DEDUP_DIR)
    result = {"queries": len(found), "with_copies": sum(bool(q.copies) for q in found),
              "without_copies": sum(not q.copies and q.error is None for q in found),
              "unreadable": sum(q.error is not None for q in found), "rule": asdict(rule),
              "results": [q.to_dict() for q in found]}
    os.makedirs(out, exist_ok=True)
    result["json"] = os.path.join(out, QUERIES_FILE)
    atomic_write(result["json"], json.dumps(result, indent=1).encode("utf-8"))
    print(json.dumps(result))
    return 0


def _copy(args: argparse.Namespace) -> int:
    print(json.dumps(copy_index(args.source, args.target, home=args.home, index_type=args.type,
                                progress=not args.quiet)))
    return 0


def _drop(args: argparse.Namespace) -> int:
    if not args.yes:
        print(f"simsearch index drop: add --yes to delete {args.target} for good", file=sys.stderr)
        return 2
    print(json.dumps({"dropped": drop_index(args.target), "index": args.target}))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    print(json.dumps(migrate_index(args.directory)))
    return 0


def _backup(args: argparse.Namespace) -> int:
    try:
        manifest = backup_index(args.index, args.dest)
    except BackupError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps({"backup": os.path.abspath(args.dest), "log_head": manifest.log_head, "items": manifest.items,
                      "uploads": manifest.uploads, "missing_uploads": len(manifest.missing_uploads),
                      "seconds": manifest.seconds}))
    return 0


def _restore(args: argparse.Namespace) -> int:
    try:
        summary = restore_index(args.backup, args.index)
    except BackupError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(summary.to_dict()))
    return 0


def _check(args: argparse.Namespace) -> int:
    if not looks_like_index(args.index):
        raise UserError(f"{args.index} is not an index directory (no database, no snapshots)")
    report = repair_store(args.index) if args.repair else check_store(args.index)
    print(json.dumps(report.to_dict()))
    print(f"{args.index}: {report.summary()}", file=sys.stderr)
    return 1 if report.damaged else 0


def _reembed(args: argparse.Namespace) -> int:
    summary = reembed(args.index, args.checkpoint, args.out, runtime=runtime_from_args(args), home=args.home,
                      index_type=args.type, batch_size=args.batch_size, num_workers=args.workers,
                      progress=not args.quiet, chunk=args.chunk)
    _report_skipped(summary.catch_up.skipped)
    print(json.dumps({"source": summary.source, "index": summary.index, "items": summary.items,
                      "copied": summary.copied, "resumed": summary.resumed,
                      "caught_up": {"added": summary.catch_up.added, "deleted": summary.catch_up.deleted,
                                    "rounds": summary.catch_up.rounds},
                      "skipped": len(summary.catch_up.skipped), "seconds": round(summary.seconds, 1),
                      "next": f"simsearch evaluate --old {summary.source} --new {summary.index} --queries DIR; "
                              f"then simsearch alias set ALIAS {summary.index}"}, indent=2))
    return 0

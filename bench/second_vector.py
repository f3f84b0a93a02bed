"""A class index with a copy descriptor beside it, against the same class index alone, in one run: which edited
copies of indexed photos the duplicate check finds, how many outside photos it flags, and what the second vector
costs at build, at each upload and in memory.

* Index: every TrashNet-150 photo, built twice with ``engine.build.build_index`` from the same class checkpoint,
  once with ``copy_checkpoint_path`` (``simsearch index build --copy-model``). The embedding cache is off, so both
  builds embed.
* Queries: ``--originals`` indexed photos (seeded), each edited once per family of :mod:`bench.copy_sets` (crop
  up to 10% a side, resize x0.5-1.2, JPEG q30-90, brightness +-15%, flip, overlay, all of them at once), and
  ``--outsiders`` Grocery-Store-160 photos, none of which is indexed. Each query is judged by
  ``engine.copies.find_copies_of_files``, the path of ``simsearch index dedup --queries``, with the rule and the
  judge of ingestion (``POST /api/images``).
* Found: the query's original is among its copies. False: an outsider with any copy, or an edited copy matched to
  another photo only.
* Calibration cosine: the shipped rule raises the descriptor-alone cosine to the index's calibrated cosine
  (:func:`engine.duplicate_rule.calibrate`); the same queries are judged again with it fixed at the copy model's
  own cosine (``fixed_descriptor_cosine``), the rule before it followed the index.
* Candidate floor: on the index with the copy descriptor, the same queries again with the rule's candidate cosine
  (from which pairs are judged on their pixels) set to each of ``--candidate-cosines`` (default: the copy
  descriptor's 90%-precision cosine, and lower ones); the descriptor-alone cosine stays.
* Descriptor margin (measured only, not the shipped rule): the shipped rule's matches again, a match of the descriptor
  alone kept only when its cosine exceeds the query's cosine with its 10th nearest item by each of ``--margins``
  (the index itself as SSCD's background set: a crowded neighbourhood asks for more).
* ``--hold-out N``: the outside images are N images of the collection itself, left out of the index: distinct
  images as like the indexed ones as any, the hardest test of false matches.
* Cost: the build's embedding time, ``Engine.add_image`` per upload (``--uploads`` outside photos, policy
  ``flag``), and the descriptor view's bytes per item.

    .venv/bin/python -m bench.second_vector --class-checkpoint runs/matrix/trashnet-150-native/model.pt \\
        --copy-checkpoint runs/trashnet-copies/model.pt          # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, replace

import numpy as np

from bench.copy_sets import FAMILIES, edited_copy
from bench.machine import emit
from engine.build import build_index
from engine.copies import find_copies_of_files
from engine.duplicate_rule import measured_descriptor_cosine, rule_for
from engine.engine import Engine
from similarity.checkpoint import load_checkpoint
from similarity.data import load_image_folder
from similarity.imageio import open_image

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "datasets")


def _queries(paths: list[str], outsiders: list[str], folder: str, originals: int, n_outside: int,
             seed: int) -> list[tuple[str, str, str | None]]:
    """``(query file, family or "outsider", the original's path or None)``, the files written under ``folder``."""
    rng = np.random.default_rng(seed)
    queries = []
    for row in rng.choice(len(paths), originals, replace=False).tolist():
        image = open_image(paths[row])
        for family in FAMILIES:
            out = os.path.join(folder, f"{row}-{family}.png")
            edited_copy(image, family, rng).save(out)
            queries.append((out, family, os.path.abspath(paths[row])))
    for row in rng.choice(len(outsiders), n_outside, replace=False).tolist():
        queries.append((outsiders[row], "outsider", None))
    return queries


def _score(engine: Engine, queries: list[tuple[str, str, str | None]], candidate_cosine: float | None = None,
           margins: list[float] | None = None, descriptor_cosine: float | None = None) -> dict:
    rule = engine.duplicate_rule
    if candidate_cosine is not None:
        rule = replace(rule, cosine=candidate_cosine)
    if descriptor_cosine is not None:
        rule = replace(rule, descriptor_cosine=descriptor_cosine)
    started = time.perf_counter()
    results = find_copies_of_files(engine, [q[0] for q in queries], rule=rule)
    seconds = time.perf_counter() - started
    scored = {**_tally(queries, results), "rule": asdict(rule), "seconds": round(seconds, 1),
              "ms_per_query": round(1000 * seconds / len(queries), 1)}
    if margins:
        kth = _kth_cosine(engine, queries)
        scored["descriptor_margin"] = {
            str(m): _tally(queries, results, lambda q, c, m=m: c["verdict"]["kind"] != "descriptor"
                           or c["verdict"]["cosine"] - kth[q] >= m) for m in margins}
    return scored


def _tally(queries: list[tuple[str, str, str | None]], results, keep=lambda _q, _c: True) -> dict:
    """Recall per family and false matches, counting the copies ``keep(query row, copy)`` accepts."""
    found, false, total = Counter(), Counter(), Counter()
    kinds, outsider_kinds = Counter(), Counter()
    for q, ((_path, family, original), result) in enumerate(zip(queries, results)):
        total[family] += 1
        copies = [c for c in result.copies if keep(q, c)]
        matched = {c["path"] for c in copies}
        if original is not None and original in matched:
            found[family] += 1
            kinds[next(c["verdict"]["kind"] for c in copies if c["path"] == original)] += 1
        elif matched:
            false[family] += 1
            if original is None:  # the strongest evidence against an outside image: pixels first, then cosine
                best = max(copies, key=lambda c: (c["verdict"]["confirmed"], c["verdict"]["cosine"]))
                outsider_kinds[best["verdict"]["kind"]] += 1
    families = [f for f in total if f != "outsider"]
    return {"recall": {f: round(found[f] / total[f], 3) for f in families},
            "recall_all_families": round(sum(found[f] for f in families) / sum(total[f] for f in families), 3),
            "outsiders_flagged": false["outsider"], "outsiders": total["outsider"],
            "outsiders_flagged_by_kind": dict(sorted(outsider_kinds.items())),
            "copies_matched_to_another_photo": sum(false[f] for f in families),
            "found_by_kind": dict(sorted(kinds.items()))}


def _kth_cosine(engine: Engine, queries: list[tuple[str, str, str | None]], k: int = 10) -> list[float]:
    """Each query's cosine with its ``k``-th nearest item in the duplicate view: how crowded its neighbourhood is."""
    from similarity.imageio import open_image as decode

    kth = []
    for start in range(0, len(queries), 64):
        images = [decode(q[0]) for q in queries[start:start + 64]]
        xq = np.asarray(engine.duplicate_embedder.embed_images(images), dtype=np.float32)
        kth += [row[-1].similarity if len(row) >= k else -1.0 for row in engine.duplicate_space.search(xq, k)]
    return kth


def _upload_ms(engine: Engine, files: list[str]) -> float:
    payloads = [open(path, "rb").read() for path in files]
    started = time.perf_counter()
    for data in payloads:
        engine.add_image(data, duplicates="flag")
    return round(1000 * (time.perf_counter() - started) / len(payloads), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--class-checkpoint", required=True)
    parser.add_argument("--copy-checkpoint", required=True)
    parser.add_argument("--data", default=os.path.join(SHARED, "trashnet-150"))
    parser.add_argument("--outside", default=os.path.join(SHARED, "grocery-store-160"))
    parser.add_argument("--hold-out", type=int, default=0, metavar="N",
                        help="leave N images of --data (seeded) out of the index and use them as the outside images "
                             "instead of --outside: distinct images of the same collection")
    parser.add_argument("--originals", type=int, default=100)
    parser.add_argument("--outsiders", type=int, default=300)
    parser.add_argument("--uploads", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margins", type=float, nargs="*", default=[0.0, 0.05, 0.1, 0.15, 0.2],
                        help="a descriptor-alone match kept only when its cosine exceeds the query's cosine with its "
                             "10th nearest item by this much (measured, not the shipped rule)")
    parser.add_argument("--candidate-cosines", type=float, nargs="*", default=None,
                        help="default: the copy checkpoint's 90%%-precision cosine, 0.4 and 0.3")
    parser.add_argument("--out", default="bench/results/second_vector.json")
    args = parser.parse_args()
    os.environ["SIMSEARCH_EMBEDDING_CACHE"] = "off"  # both builds embed
    if args.candidate_cosines is None:
        measured = measured_descriptor_cosine(load_checkpoint(args.copy_checkpoint))
        args.candidate_cosines = [round(c, 4) for c in (measured, 0.4, 0.3) if c is not None]

    data = load_image_folder(args.data)
    if args.hold_out:
        held = np.random.default_rng(args.seed + 1).permutation(len(data))
        outside = [data.paths[i] for i in held[:args.hold_out]]
        data = data.subset(np.sort(held[args.hold_out:]))
    else:
        outside = load_image_folder(args.outside).paths
    work = tempfile.mkdtemp(prefix="second-vector-")
    try:
        query_folder = os.path.join(work, "queries")
        os.makedirs(query_folder)
        queries = _queries(list(data.paths), list(outside), query_folder, args.originals, args.outsiders, args.seed)
        used = {q[0] for q in queries}
        uploads = [p for p in outside if p not in used][:args.uploads]
        cases = {}
        for name, copy_checkpoint in (("class_alone", None), ("class_and_copy_descriptor", args.copy_checkpoint)):
            index = os.path.join(work, name)
            started = time.perf_counter()
            summary = build_index(args.class_checkpoint, data, index, progress=False, duplicates="keep",
                                  copy_checkpoint_path=copy_checkpoint)
            build_s = time.perf_counter() - started
            engine = Engine.open(index)
            try:
                space = engine.store.descriptors
                started = time.perf_counter()
                engine.duplicate_calibration  # measured once per process, before its first judgement
                calibration_s = time.perf_counter() - started
                cases[name] = {"items": summary.added, "build_seconds": round(build_s, 1),
                               "embed_seconds": round(summary.embed_seconds, 1),
                               "descriptor_bytes_per_item": None if space is None else 4 * space.dim,
                               **_score(engine, queries, margins=args.margins if space is not None else None)}
                if space is not None:
                    calibration = engine.duplicate_calibration
                    cases[name]["calibration"] = None if calibration is None else {
                        **calibration.to_dict(), "seconds": round(calibration_s, 2)}
                    # the old way in the same run: the descriptor-alone cosine fixed, whatever the index holds
                    fixed = rule_for(engine.copy_checkpoint).descriptor_cosine
                    cases[name]["fixed_descriptor_cosine"] = {"descriptor_cosine": fixed,
                                                              **_score(engine, queries, descriptor_cosine=fixed)}
                    cases[name]["candidate_floor"] = {str(c): _score(engine, queries, c)
                                                      for c in args.candidate_cosines}
                cases[name]["upload_ms"] = _upload_ms(engine, uploads)
            finally:
                engine.close()
            print(name, cases[name])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit({"benchmark": "second_vector", "class_checkpoint": args.class_checkpoint,
          "copy_checkpoint": args.copy_checkpoint, "data": os.path.basename(args.data),
          "outside": f"{args.hold_out} held out" if args.hold_out else os.path.basename(args.outside), "originals": args.originals, "families": list(FAMILIES),
          "outsiders": args.outsiders, "uploads": args.uploads, "seed": args.seed,
          "candidate_cosines": args.candidate_cosines, "cases": cases}, args.out)


if __name__ == "__main__":
    main()

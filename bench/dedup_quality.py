"""Figure: copy detection quality of each method, on Fashion-MNIST and on photos, measured in one run, and the
thresholds of the shipped duplicate rule.

Per data set: ``--originals`` images each get one seeded copy per family of edits (``bench/copy_sets.py``: crop of
up to 10% per side, resize x0.5-1.2, JPEG q30-90, brightness +-15%, horizontal flip, a small overlay of text or a
logo box, and all of them combined), and ``--unmatched`` other images get the same copies while their originals
stay out of the references (queries that must match nothing).  The references are the originals plus
``--distractors`` distinct images (distinct decoded pixels), shuffled.

- Fashion-MNIST: originals and unmatched images from the test split (10k), distractors from the train split (60k).
- TrashNet: originals and unmatched images from TrashNet-150 (2,527 photos), distractors from the rest of
  TrashNet-150 and all of Grocery Store-160 (1,512): fewer than 5,000 distinct photos exist here, the JSON says how
  many were used (``distractors_short_of_request``).

Methods (``bench/copy_methods.py``), each a score per (query, reference) pair, the references ranked per query:
``phash`` (64-bit, mirror included), ``pdq`` (256-bit PDQ, mirror included; skipped without ``pdqhash``),
``class_embedding`` (``--class-checkpoint``), ``imagenet_features`` (EfficientNet-Lite0's ImageNet features),
``copy_descriptor`` (``--copy-checkpoint``, objective copies) and ``copy_descriptor_normalised`` (minus SSCD's
background offset, from the checkpoint's stored background), ``descriptor_verified``: the descriptor's top-k
candidates judged by :func:`similarity.judge.judge` (exact, pHash, local verification) and a confirmed candidate
ranked first (its score is the cosine + 2), so that its threshold t <= 1 is ``DuplicateRule.descriptor_cosine``.

Per method and family (each family's copies with the unmatched queries of the same family): a query *matches*
when its best reference scores >= the threshold; a *false match* is a match to a reference other than its
original, or any match of an unmatched query, over all queries of the family.  ``own_threshold``: the lowest with
false matches <= ``--max-false`` (1%) in that family; ``shared_threshold``: the highest of those, one threshold for
every family (a rule has one) that keeps each family at <= 1%, with recall (copies matched to their original /
copies) per family at it; ``pooled_threshold``: the lowest with <= 1% false matches over all families' queries
together (every family weighs the same: each has as many copies and unmatched queries), recall per family at it;
``micro_ap``: DISC21's µAP over each query's top-k predictions.  ``target_met``: recall >= 0.95 and false
matches <= 1% in every family at the shared threshold (``target_met_at_pooled``: at the pooled one).  Costs: ms
per image (the method's signal of one image) and per (query, reference) pair.

    nice -n 19 .venv/bin/python -m bench.dedup_quality \\
        --class-checkpoint fashion-mnist=runs/matrix/fashion-mnist-native/model.pt \\
        --class-checkpoint trashnet=runs/matrix/trashnet-150-native/model.pt \\
        --copy-checkpoint fashion-mnist=runs/fmnist-copies/model.pt \\
        --copy-checkpoint trashnet=runs/trashnet-copies/model.pt
    ... --quick: 20 originals, 20 unmatched, 200 distractors per set (a minute or two: it checks the code path)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.copy_eval import evaluate
from bench.copy_methods import (CONFIRMED_BONUS, ImageNetFeatures, Ranking, embed_all, pdq_words, phash_words,
                                rank_by_cosine, rank_by_hash, verify_candidates)
from bench.copy_sets import DATASETS, FAMILIES, CopySet, build_copy_set, fashion_mnist_pools, folder_pool
from bench.machine import emit
from similarity.checkpoint import load_checkpoint
from similarity.copies import background_offsets
from similarity.copy_train import BACKGROUND_ARRAY
from similarity.hygiene import DuplicateRule
from similarity.judge import ImageSignals

SETS = ("fashion-mnist", "trashnet")
TARGET_RECALL = 0.95


def per_set(values: list[str] | None, sets: tuple[str, ...], flag: str) -> dict[str, str]:
    """``--flag SET=PATH`` (repeatable) or ``--flag PATH`` (every set) -> {set: path}."""
    out: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep:
            out.update({s: value for s in sets})
        elif name not in SETS:
            raise SystemExit(f"{flag} {value}: unknown set {name!r}; expected one of {SETS}")
        else:
            out[name] = path
    for name, path in out.items():
        if not os.path.exists(path):
            raise SystemExit(f"{flag}: {path} (for {name}) not found")
    return out


def make_set(name: str, args: argparse.Namespace, rng: np.random.Generator) -> CopySet:
    if name == "fashion-mnist":
        query_pool, distractor_pool = fashion_mnist_pools()
    else:
        trashnet = os.path.join(args.datasets, "trashnet-150")
        query_pool = folder_pool(trashnet)
        distractor_pool = folder_pool(trashnet, os.path.join(args.datasets, "grocery-store-160"))
    return build_copy_set(name, query_pool, distractor_pool, originals=args.originals, unmatched=args.unmatched,
                          distractors=args.distractors, rng=rng)


def rankings_of(data: CopySet, args: argparse.Namespace, imagenet: ImageNetFeatures | None,
                class_checkpoint: str | None, copy_checkpoint: str | None) -> tuple[dict[str, Ranking], dict]:
    """Every method's ranking on one set, and what each method was (or why it was skipped)."""
    k, name = args.top_k, data.name
    rankings: dict[str, Ranking] = {}
    about: dict[str, str] = {}
    started = time.perf_counter()
    images = data.queries + data.references
    signals = [ImageSignals.of_image(image, f"{name}:{i}")
               for i, image in enumerate(tqdm(images, desc=f"{name}: pHash", unit="img", leave=False))]
    signal_s = (time.perf_counter() - started) / len(signals)
    q_signals, r_signals = signals[:len(data.queries)], signals[len(data.queries):]

    rankings["phash"] = rank_by_hash(phash_words(q_signals), phash_words(r_signals), k, bits=64,
                                     seconds_per_image=signal_s)
    about["phash"] = "64-bit pHash, mirror included (ms per image: pHash, mirror pHash, sha256, grayscale copy)"
    try:
        started = time.perf_counter()
        q_pdq, r_pdq = pdq_words(data.queries, f"{name} queries"), pdq_words(data.references, f"{name} references")
        pdq_s = (time.perf_counter() - started) / len(signals)
        rankings["pdq"] = rank_by_hash(q_pdq[:2], r_pdq[:2], k, bits=256, seconds_per_image=pdq_s)
        rankings["pdq"].notes["median_quality"] = float(np.median(np.concatenate([q_pdq[2], r_pdq[2]])))
        about["pdq"] = "256-bit PDQ (pdqhash), mirror included"
    except ImportError:
        about["pdq"] = "skipped: pdqhash is not installed (pip install -r requirements-dev.txt)"

    def cosine_method(method: str, embedder, description: str) -> tuple[np.ndarray, np.ndarray]:
        q, q_s = embed_all(embedder, data.queries, f"{name}: {method} queries")
        r, r_s = embed_all(embedder, data.references, f"{name}: {method} references")
        seconds = (q_s * len(q) + r_s * len(r)) / (len(q) + len(r))
        rankings[method] = rank_by_cosine(q, r, k, seconds_per_image=seconds)
        about[method] = description
        return q, r

    if class_checkpoint:
        checkpoint = load_checkpoint(class_checkpoint)
        if checkpoint.objective != "classes":
            raise SystemExit(f"--class-checkpoint {class_checkpoint}: objective {checkpoint.objective!r}, not classes")
        cosine_method("class_embedding", checkpoint.embedder(), f"cosine, class-trained checkpoint {class_checkpoint}")
    else:
        about["class_embedding"] = f"skipped: no --class-checkpoint for {name}"
    if imagenet is not None:
        cosine_method("imagenet_features", imagenet, "cosine, EfficientNet-Lite0 ImageNet features (1280-d, 224 px)")
    else:
        about["imagenet_features"] = "skipped: --no-imagenet"
    if copy_checkpoint:
        checkpoint = load_checkpoint(copy_checkpoint)
        if checkpoint.objective != "copies":
            raise SystemExit(f"--copy-checkpoint {copy_checkpoint}: objective {checkpoint.objective!r}, not copies")
        q, r = cosine_method("copy_descriptor", checkpoint.embedder(), f"cosine, copy descriptor {copy_checkpoint}")
        background = checkpoint.arrays.get(BACKGROUND_ARRAY)
        plain = rankings["copy_descriptor"]
        if background is not None and len(background):
            norm = checkpoint.config.copies
            offsets = background_offsets(q, background, norm.score_norm_k)
            rankings["copy_descriptor_normalised"] = rank_by_cosine(
                q, r, k, seconds_per_image=plain.ms_per_image / 1000, offsets=offsets,
                beta=norm.score_norm_beta)
            about["copy_descriptor_normalised"] = (f"cosine - {norm.score_norm_beta} x mean cosine to the "
                                                   f"{norm.score_norm_k} nearest of the checkpoint's {len(background)} "
                                                   "background descriptors")
        else:
            about["copy_descriptor_normalised"] = "skipped: the checkpoint stores no background descriptors"
        rule = DuplicateRule(cosine=args.candidate_cosine, min_inliers=args.min_inliers or None,
                             verify_min_side=args.verify_min_side)
        verified = verify_candidates(q_signals, r_signals, plain, rule, desc=name)
        verified.ms_per_image = round(verified.ms_per_image + 1000 * signal_s, 4)
        rankings["descriptor_verified"] = verified
        about["descriptor_verified"] = (f"copy descriptor top-{k} candidates at cosine >= {args.candidate_cosine} "
                                        f"judged by similarity.judge (pHash <= {rule.phash_bits} bits, "
                                        f"min_inliers {rule.min_inliers}, verify_min_side {rule.verify_min_side}); "
                                        f"confirmed candidates score cosine + {CONFIRMED_BONUS:g}; ms_per_pair: per "
                                        "judged candidate (the descriptor's own cost per pair: copy_descriptor)")
    else:
        for method in ("copy_descriptor", "copy_descriptor_normalised", "descriptor_verified"):
            about[method] = f"skipped: no --copy-checkpoint for {name}"
    return rankings, about


def rule_text(method: str, threshold: float | None) -> str:
    """What a threshold on a method's score means, in the duplicate rule's terms."""
    if threshold is None:
        return "nothing may match (no threshold keeps false matches low enough)"
    if method in ("phash", "pdq"):
        bits = 64 if method == "phash" else 256
        return f"Hamming distance <= {bits - threshold:g} of {bits} bits (mirror included)"
    if method == "copy_descriptor_normalised":
        return f"cosine - beta x background offset >= {threshold:.4f}"
    if method == "descriptor_verified":
        if threshold > 1:
            return f"confirmed on pixels (exact, hash, verified) at cosine >= {threshold - CONFIRMED_BONUS:.4f} only"
        return f"confirmed on pixels, or DuplicateRule.descriptor_cosine = {threshold:.4f}"
    return f"cosine >= {threshold:.4f}"


def evaluate_method(method: str, ranking: Ranking, data: CopySet, max_false: float) -> dict:
    family, truth = np.array(data.family), np.array(data.truth, dtype=np.int64)
    per_family = {f: evaluate(ranking.scores[family == f], ranking.rows[family == f], truth[family == f],
                              max_false=max_false) for f in FAMILIES}
    owns = [row["own_threshold"] for row in per_family.values()]
    shared = None if any(t is None for t in owns) else max(owns)
    at = float("inf") if shared is None else shared
    for f in FAMILIES:
        mine = family == f
        per_family[f]["at_shared_threshold"] = evaluate(ranking.scores[mine], ranking.rows[mine], truth[mine],
                                                        max_false=max_false, threshold=at)["at_threshold"]
    pooled = evaluate(ranking.scores, ranking.rows, truth, max_false=max_false)
    pooled_at = float("inf") if pooled["own_threshold"] is None else pooled["own_threshold"]
    for f in FAMILIES:
        mine = family == f
        per_family[f]["at_pooled_threshold"] = evaluate(ranking.scores[mine], ranking.rows[mine], truth[mine],
                                                        max_false=max_false, threshold=pooled_at)["at_threshold"]

    def met(key: str) -> bool:
        return all(row[key]["recall"] >= TARGET_RECALL and row[key]["false_matches"] <= max_false
                   for row in per_family.values())

    return {"shared_threshold": shared, "rule": rule_text(method, shared), "target_met": met("at_shared_threshold"),
            "recall_at_shared": {f: row["at_shared_threshold"]["recall"] for f, row in per_family.items()},
            "pooled_threshold": pooled["own_threshold"], "pooled_rule": rule_text(method, pooled["own_threshold"]),
            "target_met_at_pooled": met("at_pooled_threshold"),
            "recall_at_pooled": {f: row["at_pooled_threshold"]["recall"] for f, row in per_family.items()},
            "micro_ap": {f: row["micro_ap"] for f, row in per_family.items()},
            "families": per_family, "all_families_pooled": pooled,
            "ms_per_image": ranking.ms_per_image, "ms_per_pair": ranking.ms_per_pair, **ranking.notes}


def print_table(results: dict) -> None:
    """The headline (stderr): per set and method, recall per family at the shared threshold (at most 1% false
    matches in every family) and at the pooled one (at most 1% over all families together)."""
    print(f"\n{'set':<14}{'method':<28}{'threshold':>10}  " + " ".join(f"{f:>10}" for f in FAMILIES)
          + f"{'µAP all':>9}{'ms/img':>9}{'µs/pair':>9}", file=sys.stderr)
    for name, result in results.items():
        for method, row in result["methods"].items():
            for kind in ("shared", "pooled"):
                t = row[f"{kind}_threshold"]
                recalls = " ".join(f"{row[f'recall_at_{kind}'][f]:>10.3f}" for f in FAMILIES)
                line = (f"{name if kind == 'shared' else '':<14}{method if kind == 'shared' else '  (pooled)':<28}"
                        f"{'none' if t is None else f'{t:.4g}':>10}  {recalls}")
                if kind == "shared":
                    line += (f"{row['all_families_pooled']['micro_ap']:>9.3f}{row['ms_per_image']:>9.3g}"
                             f"{1000 * row['ms_per_pair']:>9.3g}")
                met = row["target_met" if kind == "shared" else "target_met_at_pooled"]
                print(line + ("  target met" if met else ""), file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {SETS}")
    parser.add_argument("--originals", "--per-domain", type=int, default=500, help="originals per set")
    parser.add_argument("--unmatched", type=int, default=None, help="unmatched images per set (default: --originals)")
    parser.add_argument("--distractors", "--distinct", type=int, default=5000,
                        help="distinct distractors per set (fewer where the set has fewer)")
    parser.add_argument("--quick", action="store_true", help="20 originals, 20 unmatched, 200 distractors per set")
    parser.add_argument("--class-checkpoint", action="append", metavar="[SET=]PATH",
                        help="a class-trained checkpoint (repeat per set)")
    parser.add_argument("--copy-checkpoint", action="append", metavar="[SET=]PATH",
                        help="a copy descriptor (objective copies; repeat per set)")
    parser.add_argument("--no-imagenet", action="store_true", help="skip the ImageNet features")
    parser.add_argument("--top-k", type=int, default=10, help="references kept per query (µAP, verification)")
    parser.add_argument("--max-false", type=float, default=0.01, help="false matches allowed at a threshold")
    parser.add_argument("--candidate-cosine", type=float, default=-1.0,
                        help="descriptor_verified: DuplicateRule.cosine, the least cosine of a judged candidate")
    parser.add_argument("--min-inliers", type=int, default=DuplicateRule().min_inliers,
                        help="descriptor_verified: RANSAC inliers of a verified pair (0: no verification)")
    parser.add_argument("--verify-min-side", type=int, default=DuplicateRule().verify_min_side,
                        help="descriptor_verified: the least shorter side (px) of verified images")
    parser.add_argument("--datasets", default=DATASETS, help="folder of trashnet-150 and grocery-store-160")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/dedup_quality.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.originals, args.distractors = 20, 200
    args.unmatched = args.originals if args.unmatched is None else args.unmatched
    sets = tuple(s for s in args.sets.split(",") if s)
    if unknown := set(sets) - set(SETS):
        raise SystemExit(f"--sets: unknown {sorted(unknown)}; expected some of {SETS}")
    class_checkpoints = per_set(args.class_checkpoint, sets, "--class-checkpoint")
    copy_checkpoints = per_set(args.copy_checkpoint, sets, "--copy-checkpoint")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    imagenet = None if args.no_imagenet else ImageNetFeatures()

    started = time.perf_counter()
    results, timings = {}, {}
    for name in sets:
        set_started = time.perf_counter()
        data = make_set(name, args, np.random.default_rng((args.seed, SETS.index(name))))  # the same set alone
        timings[f"{name}_build_s"] = round(time.perf_counter() - set_started, 1)
        print(f"{name}: {data.counts}", file=sys.stderr)
        rankings, about = rankings_of(data, args, imagenet, class_checkpoints.get(name), copy_checkpoints.get(name))
        results[name] = {"images": data.counts, "methods_used": about,
                         "methods": {m: evaluate_method(m, r, data, args.max_false) for m, r in rankings.items()}}
        timings[f"{name}_s"] = round(time.perf_counter() - set_started, 1)
        del data, rankings
    timings["total_s"] = round(time.perf_counter() - started, 1)
    print_table(results)
    thresholds = {m: {name: {kind: results[name]["methods"][m][f"{kind}_threshold"] for kind in ("shared", "pooled")}
                      for name in results if m in results[name]["methods"]}
                  for m in dict.fromkeys(m for r in results.values() for m in r["methods"])}
    print(f"\nthresholds at <= {args.max_false:.0%} false matches (shared: in every family; pooled: over all):",
          file=sys.stderr)
    for method, by_set in thresholds.items():
        print(f"  {method}: {json.dumps(by_set)}", file=sys.stderr)
    emit({"figure": "copy detection per method and family of edits: recall at <= 1% false matches, µAP, costs",
          "command": "python -m bench.dedup_quality " + " ".join(argv if argv is not None else sys.argv[1:]),
          "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
          "families": list(FAMILIES), "target": {"recall": TARGET_RECALL, "max_false_matches": args.max_false},
          "thresholds_at_max_false": thresholds, "sets": results, "timings": timings}, args.out)


if __name__ == "__main__":
    main()

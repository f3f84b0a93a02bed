"""Figure: dense verification of small images (:func:`similarity.verify.aligned_correlation`) on a copy
descriptor's candidates, and why the rule leaves it off (``DuplicateRule.min_correlation`` None;
``index dedup --min-correlation`` turns it on).

The 60,000 Fashion-MNIST training images are the index, embedded with ``--copy-checkpoint``.  Queries: ``--originals``
indexed images (seeded), each edited once per family of ``bench.copy_sets`` (crop, resize, JPEG, brightness, flip,
overlay, all at once), and ``--outsiders`` test images, which are in no way copies of an indexed image.  Each query's
``--neighbours`` nearest items at the rule's candidate cosine or more are judged by the shipped rule (the
descriptor-alone cosine calibrated on the index) with dense verification off; the same pairs' aligned correlation
is measured once, and the rule is then scored at each ``min_correlation`` of a sweep, and with a ratio test over each
query's candidates; ``with_dense_verification`` is the judge itself with ``min_correlation``
:data:`engine.duplicate_rule.DENSE_MIN_CORRELATION` (:func:`similarity.judge.dense_tier`, what ``index dedup
--min-correlation`` runs).  A copy is found when its
original is accepted; an outside image is flagged when any of its candidates is.  The figure per threshold: recall
per family, outside images flagged, and how many of them dense verification alone flagged.

    .venv/bin/python -m bench.dense_verify --copy-checkpoint runs/fmnist-copies/model.pt
    .venv/bin/python -m bench.dense_verify --copy-checkpoint OLD.pt --flip-tta --out OUT.json  # TTA added afterwards
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
from tqdm.auto import tqdm

from bench.copy_sets import FAMILIES, edited_copy
from bench.machine import emit
from engine.dedup import DEFAULT_NEIGHBOURS
from engine.duplicate_rule import DENSE_MIN_CORRELATION, MatrixSpace, calibrate, rule_for
from index.arrays import normalized
from similarity.checkpoint import load_checkpoint
from similarity.data import load_fashion_mnist
from similarity.judge import ImageSignals, Pair, alignment_correlation, dense_tier, judge

THRESHOLDS = [0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.9925, 0.995, 0.9975, 0.999]
RATIO_THRESHOLDS = [0.99, 0.993, 0.995]
RATIOS = [2.0, 4.0, 6.0]
MAX_FALSE = 0.01
BATCH = 512


def _embed(embedder, images) -> np.ndarray:
    rows = [embedder.embed_images(images[s:s + BATCH]) for s in tqdm(range(0, len(images), BATCH), desc="embedding",
                                                                       unit="batch", leave=False)]
    return normalized(np.concatenate(rows).astype(np.float32))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copy-checkpoint", required=True)
    parser.add_argument("--originals", type=int, default=200)
    parser.add_argument("--outsiders", type=int, default=2000)
    parser.add_argument("--neighbours", type=int, default=DEFAULT_NEIGHBOURS)
    parser.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None,
                        help="embed with (or without) flip test-time augmentation whatever the checkpoint says: what "
                             "it adds to a checkpoint trained without it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/dense_verify.json")
    parser.add_argument("--pairs-out", default=None, metavar="NPZ",
                        help="also write every judged pair (query, item, cosine, accepted, correlation) and each "
                             "query's truth and family, for analyses of other rules")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    checkpoint = load_checkpoint(args.copy_checkpoint)
    if args.flip_tta is not None:
        preprocess = replace(checkpoint.preprocess, flip_tta=args.flip_tta)
        checkpoint.config = replace(checkpoint.config, preprocess=preprocess)
    embedder = checkpoint.embedder()
    train, test = load_fashion_mnist(None, "train"), load_fashion_mnist(None, "test")
    references = [train.load(i) for i in range(len(train.ids))]
    vectors = _embed(embedder, references)
    space = MatrixSpace(vectors)
    calibration = calibrate(space, seed=args.seed)
    rule = rule_for(checkpoint, calibration=calibration, min_correlation=None)

    rng = np.random.default_rng(args.seed)
    queries, truth, family = [], [], []
    for row in rng.choice(len(references), args.originals, replace=False).tolist():
        for name in FAMILIES:
            queries.append(edited_copy(references[row], name, rng))
            truth.append(row)
            family.append(name)
    for row in rng.choice(len(test.ids), args.outsiders, replace=False).tolist():
        queries.append(test.load(row))
        truth.append(-1)
        family.append("outsider")
    hits = space.search(_embed(embedder, queries), args.neighbours)

    # (query, reference, accepted with dense verification off, aligned correlation or None when not needed)
    pairs: list[tuple[int, int, bool, float | None]] = []
    # the judge with dense verification on (judge_candidates' tiers): each query's items it accepts
    dense_rule = replace(rule, min_correlation=DENSE_MIN_CORRELATION)
    shipped: list[set[int]] = []
    shipped_seconds = 0.0
    signals: dict[int, ImageSignals] = {}
    align_seconds, aligned = 0.0, 0
    cosines: list[float] = []
    for q, row in enumerate(tqdm(hits, desc="judging", unit="query", leave=False)):
        query = ImageSignals.of_image(queries[q])
        candidates, verdicts = [], []
        for hit in row:
            if hit.similarity < rule.cosine:
                break
            ref = signals.setdefault(hit.id, ImageSignals.of_image(references[hit.id]))
            verdict = judge(Pair(query, ref, hit.similarity), rule)
            candidates.append(Pair(query, ref, hit.similarity))
            verdicts.append(verdict)
            correlation = None
            if verdict.kind not in ("exact", "hash", "descriptor"):
                t0 = time.perf_counter()
                correlation = alignment_correlation(query, ref, replace(rule, min_correlation=1.0))
                align_seconds += time.perf_counter() - t0
                aligned += 1
            pairs.append((q, hit.id, verdict.duplicate, correlation))
            cosines.append(hit.similarity)
        t0 = time.perf_counter()
        dense = dense_tier(candidates, verdicts, dense_rule)
        shipped_seconds += time.perf_counter() - t0
        shipped.append({hit.id for hit, v in zip(row, dense) if v.duplicate})

    truth_a = np.asarray(truth)
    family_a = np.asarray(family)
    outside = family_a == "outsider"

    # each query's best-aligned pair and the runner-up's correlation, for a ratio test over its candidates
    best_pair: dict[int, int] = {}
    runner_up: dict[int, float] = {}
    for n, (q, _ref, _accepted, correlation) in enumerate(pairs):
        if correlation is None:
            continue
        if q not in best_pair or correlation > pairs[best_pair[q]][3]:
            if q in best_pair:
                runner_up[q] = max(runner_up.get(q, -1.0), pairs[best_pair[q]][3])
            best_pair[q] = n
        else:
            runner_up[q] = max(runner_up.get(q, -1.0), correlation)

    def passes(n: int, threshold: float | None, ratio: float | None) -> bool:
        q, _ref, _accepted, correlation = pairs[n]
        if threshold is None or correlation is None or correlation < threshold:
            return False
        return ratio is None or (best_pair[q] == n and 1 - runner_up.get(q, -1.0) >= ratio * (1 - correlation))

    def score(threshold: float | None, ratio: float | None = None) -> dict:
        found = np.zeros(len(queries), bool)
        wrong = np.zeros(len(queries), bool)
        dense_only = np.zeros(len(queries), bool)
        for n, (q, ref, accepted, correlation) in enumerate(pairs):
            dense = passes(n, threshold, ratio)
            if not (accepted or dense):
                continue
            if ref == truth_a[q]:
                found[q] = True
            else:
                wrong[q] = True
                dense_only[q] |= dense and not accepted
        flagged = wrong & outside
        return {"min_correlation": threshold, **({} if ratio is None else {"ratio": ratio}),
                "recall": {f: round(float(found[family_a == f].mean()), 3) for f in FAMILIES},
                "recall_all_families": round(float(found[~outside].mean()), 4),
                "outsiders_flagged": int(flagged.sum()),
                "outsiders_flagged_share": round(float(flagged.sum() / max(1, outside.sum())), 4),
                "outsiders_flagged_by_dense_verification_alone": int((flagged & dense_only).sum()),
                "copies_matched_to_another_image": int((wrong & ~outside & ~found).sum())}

    if args.pairs_out:
        np.savez(args.pairs_out, query=np.array([p[0] for p in pairs]), item=np.array([p[1] for p in pairs]),
                 cosine=np.array(cosines), accepted=np.array([p[2] for p in pairs]),
                 correlation=np.array([np.nan if p[3] is None else p[3] for p in pairs]), truth=truth_a,
                 family=family_a)
    sweep = [score(t) for t in THRESHOLDS]
    found = np.array([truth_a[q] in accepted for q, accepted in enumerate(shipped)])
    wrong = np.array([bool(accepted - {int(truth_a[q])}) for q, accepted in enumerate(shipped)])
    with_dense = {"min_correlation": DENSE_MIN_CORRELATION, "dense_ratio": dense_rule.dense_ratio,
                  "recall": {f: round(float(found[family_a == f].mean()), 3) for f in FAMILIES},
                  "recall_all_families": round(float(found[~outside].mean()), 4),
                  "outsiders_flagged": int((wrong & outside).sum()),
                  "outsiders_flagged_share": round(float((wrong & outside).sum() / max(1, outside.sum())), 4),
                  "copies_matched_to_another_image": int((wrong & ~outside & ~found).sum()),
                  "dense_ms_per_query": round(1000 * shipped_seconds / len(queries), 2)}
    # the best-aligned candidate of a query accepted only when its misalignment (1 - correlation) is under 1/ratio of
    # the runner-up's, at other thresholds and ratios
    ratio_test = [score(t, r) for t in RATIO_THRESHOLDS for r in RATIOS]
    within = [row for row in sweep if row["outsiders_flagged_share"] <= MAX_FALSE]
    best = max(within, key=lambda row: row["recall_all_families"]) if within else None
    correlations = [c for _q, _r, _a, c in pairs if c is not None]
    emit({"benchmark": "dense_verify", "copy_checkpoint": args.copy_checkpoint,
          "flip_tta": checkpoint.preprocess.flip_tta, "index_items": len(references),
          "originals": args.originals, "families": list(FAMILIES), "outsiders": args.outsiders,
          "neighbours": args.neighbours, "seed": args.seed,
          "rule": {"cosine": rule.cosine, "descriptor_cosine": rule.descriptor_cosine, "phash_bits": rule.phash_bits,
                   "calibration": calibration.to_dict()},
          "pairs_judged": len(pairs), "pairs_aligned": aligned,
          "align_ms_per_pair": round(1000 * align_seconds / max(1, aligned), 3),
          "pairs_accepted_without_dense": sum(1 for _q, _r, accepted, _c in pairs if accepted),
          "correlation_quantiles": {str(p): round(float(np.quantile(correlations, p)), 4)
                                    for p in (0.5, 0.9, 0.99)} if correlations else None,
          "without_dense_verification": score(None), "with_dense_verification": with_dense, "sweep": sweep,
          "ratio_test": ratio_test,
          "best_within_1_percent": best,
          "seconds": round(time.perf_counter() - started, 1)}, args.out)


if __name__ == "__main__":
    main()

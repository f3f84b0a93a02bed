"""The methods ``bench/dedup_quality.py`` compares: each gives every (query, reference) pair a score and ranks the
references of each query (:func:`bench.copy_eval.top_k`), and says what it cost.

- hashes: 64-bit pHash (:func:`similarity.hygiene.perceptual_hashes`) and 256-bit PDQ (``pdqhash``); the score is
  the bits that agree, the better of the plain and the mirrored comparison (as :func:`similarity.hygiene.
  phash_distance` does with flips);
- embeddings: the cosine of L2-normalised vectors from a checkpoint's embedder (a class embedding, a copy
  descriptor) or from the ImageNet EfficientNet-Lite0 backbone (:class:`ImageNetFeatures`); a copy descriptor also
  with SSCD's background score normalisation (:func:`similarity.copies.normalise_scores`);
- the descriptor plus local verification: :func:`similarity.judge.judge` on each query's top-k descriptor
  candidates; a candidate confirmed on pixels (exact, hash or verified) scores its cosine + 2, so a threshold t <= 1
  on the score is the rule "confirmed, or cosine >= t" (``DuplicateRule.descriptor_cosine = t``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from bench.copy_eval import hamming_table, top_k
from similarity.config import ModelConfig
from similarity.copies import normalise_scores
from similarity.hygiene import DuplicateRule
from similarity.judge import ImageSignals, Pair, judge
from similarity.models import default_preprocess, efficientnet_lite0
from similarity.transforms import eval_transform

CONFIRMED_BONUS = 2.0  # added to a pixel-confirmed candidate's cosine: above every unconfirmed one
EMBED_BATCH = 64


@dataclass
class Ranking:
    """A method's answer on one set: ``scores``, ``rows`` (nq, k) best first, and its costs."""

    scores: np.ndarray
    rows: np.ndarray
    ms_per_image: float
    ms_per_pair: float
    notes: dict = field(default_factory=dict)


def _ms(seconds: float, count: int) -> float:
    """Milliseconds per item, to 4 significant digits (a hash comparison is nanoseconds)."""
    return float(f"{1000 * seconds / max(1, count):.4g}")


# ----------------------------------------------------------------------------- hashes


def phash_words(signals: Sequence[ImageSignals]) -> tuple[np.ndarray, np.ndarray]:
    """(pHash (n, 1) uint64, mirror image's pHash (n, 1) uint64) of decoded images' signals."""
    plain = np.array([[s.hashes.phash] for s in signals], dtype=np.uint64)
    mirror = np.array([[s.hashes.phash_mirror] for s in signals], dtype=np.uint64)
    return plain, mirror


def pdq_words(images: Sequence[Image.Image], desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(PDQ (n, 4) uint64, mirror image's PDQ (n, 4) uint64, quality (n,) int) of decoded images."""
    import pdqhash

    def words(image: Image.Image) -> tuple[np.ndarray, int]:
        bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)))
        return np.frombuffer(np.packbits(bits.astype(np.uint8)).tobytes(), dtype=">u8").astype(np.uint64), quality

    plain, mirror, quality = [], [], []
    for image in tqdm(images, desc=f"{desc}: PDQ", unit="img", leave=False):
        (p, q), (m, _) = words(image), words(ImageOps.mirror(image))
        plain.append(p)
        mirror.append(m)
        quality.append(q)
    return np.stack(plain), np.stack(mirror), np.asarray(quality)


def rank_by_hash(query: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray], k: int, *,
                 bits: int, seconds_per_image: float) -> Ranking:
    """Score = ``bits`` minus the smallest Hamming distance of: query and reference, the query's mirror and the
    reference, the query and the reference's mirror.  ``query``/``reference``: (plain, mirror) hash words."""
    (qp, qm), (rp, rm) = query, reference

    def rows(start: int, stop: int) -> np.ndarray:
        a, am = qp[start:stop], qm[start:stop]
        return bits - np.minimum(hamming_table(a, rp), np.minimum(hamming_table(am, rp), hamming_table(a, rm)))

    started = time.perf_counter()
    scores, ranked = top_k(rows, len(qp), len(rp), k)
    return Ranking(scores, ranked, _ms(seconds_per_image, 1),
                   _ms(time.perf_counter() - started, len(qp) * len(rp)))


# ----------------------------------------------------------------------------- embeddings


class ImageNetFeatures:
    """The ImageNet EfficientNet-Lite0 backbone's pooled features (1280-d), L2-normalised, at 224 px: no training
    for this task.  ``embed_images`` like :class:`similarity.embedder.ImageEmbedder`'s."""

    def __init__(self) -> None:
        self.preprocess = default_preprocess(ModelConfig(backbone="efficientnet_lite0"))
        self.transform = eval_transform(self.preprocess)
        self.features = efficientnet_lite0(True, self.preprocess.image_size).features.eval()

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        with torch.inference_mode():
            x = torch.stack([self.transform(image) for image in images])
            return F.normalize(self.features(x), dim=1).numpy().astype(np.float32)


def embed_all(embedder, images: Sequence[Image.Image], desc: str) -> tuple[np.ndarray, float]:
    """(n, d) float32 vectors of ``images`` from anything with ``embed_images``, and seconds per image."""
    chunks = []
    started = time.perf_counter()
    for start in tqdm(range(0, len(images), EMBED_BATCH), desc=desc, unit="batch", leave=False):
        chunks.append(embedder.embed_images(list(images[start:start + EMBED_BATCH])))
    return np.concatenate(chunks).astype(np.float32), (time.perf_counter() - started) / max(1, len(images))


def rank_by_cosine(query: np.ndarray, reference: np.ndarray, k: int, *, seconds_per_image: float,
                   offsets: np.ndarray | None = None, beta: float = 1.0) -> Ranking:
    """Score = cosine (query (nq, d), reference (nr, d), L2-normalised), minus ``beta * offsets`` (nq,) when given
    (background score normalisation: it moves a query's scores, not their order)."""
    def rows(start: int, stop: int) -> np.ndarray:
        sims = query[start:stop] @ reference.T
        return sims if offsets is None else normalise_scores(sims, offsets[start:stop], beta)

    started = time.perf_counter()
    scores, ranked = top_k(rows, len(query), len(reference), k)
    return Ranking(scores, ranked, _ms(seconds_per_image, 1),
                   _ms(time.perf_counter() - started, len(query) * len(reference)))


# ----------------------------------------------------------------------------- descriptor + verification


def verify_candidates(queries: Sequence[ImageSignals], references: Sequence[ImageSignals], candidates: Ranking,
                      rule: DuplicateRule, *, desc: str) -> Ranking:
    """Judge each query's top-k descriptor candidates with ``rule`` (its ``descriptor_cosine`` ignored: the score's
    threshold plays that part); a confirmed candidate scores cosine + :data:`CONFIRMED_BONUS`.  Costs: SIFT
    features of an image (plain and mirror, for the images verification needs) and the judge per candidate pair
    once features are known."""
    rule = DuplicateRule(phash_bits=rule.phash_bits, cosine=rule.cosine, flips=rule.flips, descriptor_cosine=None,
                         min_inliers=rule.min_inliers, ratio=rule.ratio, verify_min_side=rule.verify_min_side)
    needed = [*queries, *(references[int(r)] for r in np.unique(candidates.rows))]
    verifiable = [s for s in needed if rule.min_inliers is not None and s.short_side >= rule.verify_min_side]
    started = time.perf_counter()
    for signals in tqdm(verifiable, desc=f"{desc}: SIFT", unit="img", leave=False):
        signals.features()
        if rule.flips:
            signals.features(mirrored=True)
    feature_s = time.perf_counter() - started

    scores = candidates.scores.astype(np.float32).copy()
    kinds: Counter = Counter()
    verified = 0
    started = time.perf_counter()
    for q in tqdm(range(len(queries)), desc=f"{desc}: judge", unit="query", leave=False):
        for j, r in enumerate(candidates.rows[q]):
            verdict = judge(Pair(queries[q], references[int(r)], float(candidates.scores[q, j])), rule)
            kinds[verdict.kind or "none"] += 1
            if verdict.confirmed:
                scores[q, j] += CONFIRMED_BONUS
            verified += verdict.inliers is not None
    judge_s = time.perf_counter() - started
    order = np.argsort(-scores, axis=1, kind="stable")
    pairs = candidates.rows.size
    return Ranking(np.take_along_axis(scores, order, axis=1), np.take_along_axis(candidates.rows, order, axis=1),
                   candidates.ms_per_image + _ms(feature_s, len(verifiable)), _ms(judge_s, pairs),
                   {"candidate_pairs": pairs, "verdicts": dict(kinds), "images_with_sift_features": len(verifiable),
                    "sift_ms_per_image": _ms(feature_s, len(verifiable)),
                    "judge_ms_per_candidate_pair": _ms(judge_s, pairs), "pairs_verified": verified})


__all__ = ["CONFIRMED_BONUS", "ImageNetFeatures", "Ranking", "embed_all", "pdq_words", "phash_words", "rank_by_cosine",
           "rank_by_hash", "verify_candidates"]

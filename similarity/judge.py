"""The duplicate rule, once: :func:`judge` decides whether two images are copies and says on what evidence.
``simsearch index dedup``, the duplicate check at ingestion and the report's leakage all call it.

A pair is two images' signals (:class:`ImageSignals`, None where the pixels were not examined) and the cosine of
their embeddings.  A pair below ``rule.cosine`` is no candidate.  A candidate is judged by the cheapest tier that
decides it (:class:`similarity.hygiene.DuplicateRule` holds the thresholds):

1. **exact**: the same decoded pixels (:func:`similarity.hygiene.pixel_digest`);
2. **hash**: pHash within ``rule.phash_bits`` (the mirror image's pHash too when ``rule.flips``);
3. **descriptor**: for an embedding trained for copies (``rule.descriptor_cosine`` set), a cosine at or above
   that threshold; a class-trained embedding (None) has no such tier: distinct images of one class reach a
   re-saved copy's cosine;
4. **verified**: local verification (:mod:`similarity.verify`) finds at least ``rule.min_inliers`` RANSAC inliers
   (the mirror image's keypoints too when ``rule.flips``), for the candidates the tiers above left undecided
   whose images both have a shorter side of at least ``rule.verify_min_side`` pixels; for smaller images, dense
   alignment, which compares a candidate with the query's other candidates (:func:`judge_candidates`);
5. **cosine-only**: where a file cannot be read (or the pixels were not examined), the embedding alone decides:
   the descriptor tier, else only a cosine of at least :data:`similarity.hygiene.IDENTICAL_COSINE`.

``confirmed`` verdicts rest on pixel evidence (exact, hash, verified); ``descriptor`` and ``cosine-only`` ones do
not.  With ``confirm=True`` a descriptor match is verified too, so that it can be confirmed.

Dense verification (where ``rule.min_correlation`` is set) is the one tier that looks past the pair: among one
query's candidates that the other tiers leave undecided and that are too small for keypoints, the best-aligned one
is a copy when its correlation reaches ``rule.min_correlation`` and its misalignment (1 - correlation) is at most
``1 / rule.dense_ratio`` of the runner-up's.  A copy aligns far better with its original than with anything else;
a plain 28-px garment aligns about as well with several distinct ones (``bench/dense_verify.py``).  Every caller
with a query's candidates uses :func:`judge_candidates`; :func:`judge` alone rules on one pair without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from similarity.hygiene import IDENTICAL_COSINE, DuplicateRule, ImageHashes, perceptual_hashes, phash_distance
from similarity.imageio import DEFAULT_MAX_PIXELS, ImageDecodeError, open_image
from similarity.verify import (LocalFeatures, align_thumbnail, aligned_correlation, capped_gray, count_inliers,
                               local_features, mirror_gray, working_gray)

log = logging.getLogger(__name__)

KINDS = ("exact", "hash", "verified", "descriptor", "cosine-only")
CONFIRMED_KINDS = frozenset({"exact", "hash", "verified"})


class ImageSignals:
    """The pixel signals of one decoded image: its hashes (computed at decode) and its local features (computed
    on first use, of the image and of its mirror separately).  Keeps only a grayscale copy no larger than the
    working size (:func:`similarity.verify.capped_gray`: 784 bytes for a 28-px image), not the decoded pixels.
    ``hashes`` is None for an unreadable file (``error`` says why)."""

    def __init__(self, name: str, image: Image.Image | None = None, *, error: str | None = None) -> None:
        self.name = name
        self.error = error
        self.hashes: ImageHashes | None = perceptual_hashes(image) if image is not None else None
        self._gray = capped_gray(image) if image is not None else None
        self.short_side = min(image.size) if image is not None else 0  # of the decoded image, in pixels
        self._features: dict[bool, LocalFeatures] = {}
        self._thumbnails: dict[bool, np.ndarray] = {}

    @classmethod
    def of_image(cls, image: Image.Image, name: str = "image") -> ImageSignals:
        """The signals of an image already decoded (with :func:`similarity.imageio.open_image`)."""
        return cls(name, image)

    @property
    def readable(self) -> bool:
        return self.hashes is not None

    def features(self, *, mirrored: bool = False) -> LocalFeatures:
        """SIFT features of the image (or of its mirror image); empty for an unreadable file."""
        if mirrored not in self._features:
            if self._gray is None:
                return local_features(np.zeros((1, 1), np.uint8))
            gray = working_gray(self._gray)
            self._features[mirrored] = local_features(mirror_gray(gray) if mirrored else gray)
        return self._features[mirrored]

    def thumbnail(self, *, mirrored: bool = False) -> np.ndarray:
        """The image (or its mirror image) as dense alignment sees it (:func:`similarity.verify.align_thumbnail`);
        a blank square for an unreadable file."""
        if mirrored not in self._thumbnails:
            gray = np.zeros((1, 1), np.uint8) if self._gray is None else np.asarray(self._gray, dtype=np.uint8)
            self._thumbnails[mirrored] = align_thumbnail(mirror_gray(gray) if mirrored else gray)
        return self._thumbnails[mirrored]


class SignalCache:
    """:class:`ImageSignals` by file path: each file decoded at most once, and only when a pair needs it; an
    unreadable file gives signals without pixels (logged once)."""

    def __init__(self, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._signals: dict[str, ImageSignals] = {}
        self._max_pixels = max_pixels

    def get(self, path: str) -> ImageSignals:
        found = self._signals.get(path)
        if found is None:
            try:
                found = ImageSignals(path, open_image(path, max_pixels=self._max_pixels))
            except ImageDecodeError as exc:
                log.warning("duplicate check without pixels: %s", exc)
                found = ImageSignals(path, error=str(exc))
            self._signals[path] = found
        return found

    def items(self) -> list[tuple[str, ImageSignals]]:
        """``(path, signals)`` of every file decoded (or tried) so far."""
        return list(self._signals.items())

    def __len__(self) -> int:
        """Files decoded (or tried) so far."""
        return len(self._signals)


@dataclass(frozen=True)
class Pair:
    """Two images to judge: their signals (None: pixels not examined) and their embeddings' cosine."""

    a: ImageSignals | None
    b: ImageSignals | None
    cosine: float


@dataclass(frozen=True)
class Verdict:
    """Whether a pair is a copy (``kind`` one of :data:`KINDS`, None: not a copy) and the evidence: ``exact``
    (same decoded pixels), ``phash_bits`` (mirror included when the rule allows flips; None without pixels),
    the embeddings' ``cosine``, ``inliers`` of local verification and ``correlation`` of dense alignment (None
    when not run) and ``readable`` (both files decoded; None when the pixels were not examined)."""

    kind: str | None
    cosine: float
    exact: bool = False
    phash_bits: int | None = None
    inliers: int | None = None
    readable: bool | None = None
    correlation: float | None = None

    @property
    def duplicate(self) -> bool:
        return self.kind is not None

    @property
    def confirmed(self) -> bool:
        """A copy on pixel evidence (exact, hash or verified)."""
        return self.kind in CONFIRMED_KINDS

    def to_dict(self) -> dict:
        return {**asdict(self), "cosine": round(self.cosine, 6), "confirmed": self.confirmed,
                "correlation": None if self.correlation is None else round(self.correlation, 4)}


def same_pixels(a: ImageSignals | None, b: ImageSignals | None) -> bool:
    """Both readable with the same decoded pixels: the first tier alone, for a caller that looks for an exact copy
    among candidates after it has found a near one."""
    return a is not None and b is not None and a.readable and b.readable and a.hashes.exact == b.hashes.exact


def verification_inliers(a: ImageSignals, b: ImageSignals, rule: DuplicateRule) -> int:
    """RANSAC inliers between two readable images: of ``a`` against ``b``, and when that falls short of
    ``rule.min_inliers`` and ``rule.flips``, against ``b``'s mirror image; the larger."""
    found = count_inliers(a.features(), b.features(), ratio=rule.ratio)
    if rule.flips and (rule.min_inliers is None or found < rule.min_inliers):
        found = max(found, count_inliers(a.features(), b.features(mirrored=True), ratio=rule.ratio))
    return found


def alignment_correlation(a: ImageSignals, b: ImageSignals, rule: DuplicateRule) -> float:
    """Dense alignment of two readable images: ``a`` against ``b``, and when that falls short of
    ``rule.min_correlation`` and ``rule.flips``, against ``b``'s mirror image; the larger."""
    found = aligned_correlation(a.thumbnail(), b.thumbnail())
    if rule.flips and (rule.min_correlation is None or found < rule.min_correlation):
        found = max(found, aligned_correlation(a.thumbnail(), b.thumbnail(mirrored=True)))
    return found


def judge(pair: Pair, rule: DuplicateRule = DuplicateRule(), *, confirm: bool = False) -> Verdict:
    """The verdict on one pair under ``rule`` (see the module docstring for the tiers).  Decodes nothing itself:
    the pair's signals compute hashes and features when first asked."""
    cosine = float(pair.cosine)
    if not np.isfinite(cosine):
        raise ValueError(f"cosine must be a finite number, got {pair.cosine}")
    examined = pair.a is not None and pair.b is not None
    readable = examined and pair.a.readable and pair.b.readable
    if cosine < rule.cosine:
        return Verdict(None, cosine, readable=readable if examined else None)
    descriptor = rule.descriptor_cosine is not None and cosine >= rule.descriptor_cosine
    if not readable:
        kind = "descriptor" if descriptor else ("cosine-only" if cosine >= IDENTICAL_COSINE else None)
        return Verdict(kind, cosine, readable=False if examined else None)
    exact = pair.a.hashes.exact == pair.b.hashes.exact
    bits = phash_distance(pair.a.hashes, pair.b.hashes, flips=rule.flips)
    if exact:
        return Verdict("exact", cosine, True, bits, readable=True)
    if bits <= rule.phash_bits:
        return Verdict("hash", cosine, False, bits, readable=True)
    inliers = None
    verifiable = min(pair.a.short_side, pair.b.short_side) >= rule.verify_min_side
    if rule.min_inliers is not None and verifiable and (not descriptor or confirm):
        inliers = verification_inliers(pair.a, pair.b, rule)
        if inliers >= rule.min_inliers:
            return Verdict("verified", cosine, False, bits, inliers, True)
    return Verdict("descriptor" if descriptor else None, cosine, False, bits, inliers, True)


def _densely_verifiable(pair: Pair, verdict: Verdict, rule: DuplicateRule, confirm: bool) -> bool:
    """A candidate the other tiers left undecided (a descriptor match too, with ``confirm``), both images
    readable and one of them under ``rule.verify_min_side``."""
    return (verdict.readable is True and verdict.cosine >= rule.cosine
            and (verdict.kind is None or (confirm and verdict.kind == "descriptor"))
            and min(pair.a.short_side, pair.b.short_side) < rule.verify_min_side)


def dense_tier(pairs: Sequence[Pair], verdicts: Sequence[Verdict], rule: DuplicateRule, *,
               confirm: bool = False) -> list[Verdict]:
    """``verdicts`` (of ``pairs``: one query's candidates, the query as ``a``) with dense verification applied
    (the module docstring): unchanged without ``rule.min_correlation``; each aligned candidate's verdict carries its
    ``correlation``, and the best one becomes ``verified`` when it passes.  A query that another tier has matched
    already is left as it is."""
    out = list(verdicts)
    if rule.min_correlation is None or any(v.confirmed or (v.duplicate and not confirm) for v in verdicts):
        return out  # only a query no other tier has matched
    aligned = []
    for n, (pair, verdict) in enumerate(zip(pairs, verdicts)):
        if _densely_verifiable(pair, verdict, rule, confirm):
            correlation = alignment_correlation(pair.a, pair.b, rule)
            out[n] = replace(verdict, correlation=correlation)
            aligned.append((correlation, n))
    if aligned:
        aligned.sort(reverse=True)
        best, n = aligned[0]
        runner_up = aligned[1][0] if len(aligned) > 1 else -1.0
        if best >= rule.min_correlation and 1.0 - runner_up >= rule.dense_ratio * (1.0 - best):
            out[n] = replace(out[n], kind="verified")
    return out


def first_copy(pairs: Iterable[Pair], rule: DuplicateRule = DuplicateRule()) -> tuple[int, Verdict] | None:
    """The first of one query's candidates (``pairs``, best first, the query as ``a``; taken one at a time, so a
    lazy iterable decodes no more files than needed) that the judge accepts, with its position and verdict; else
    the one :func:`dense_tier` picks among them all; else None."""
    seen, verdicts = [], []
    for position, pair in enumerate(pairs):
        verdict = judge(pair, rule)
        if verdict.duplicate:
            return position, verdict
        seen.append(pair)
        verdicts.append(verdict)
    return next(((n, v) for n, v in enumerate(dense_tier(seen, verdicts, rule)) if v.duplicate), None)


def judge_candidates(pairs: Sequence[Pair], rule: DuplicateRule = DuplicateRule(), *,
                     confirm: bool = False) -> list[Verdict]:
    """The verdicts on one query's candidates (``pairs``, the query as ``a``): :func:`judge` on each, then
    :func:`dense_tier`."""
    return dense_tier(pairs, [judge(pair, rule, confirm=confirm) for pair in pairs], rule, confirm=confirm)

"""Duplicate detection on pixels: an exact hash of the decoded pixels, perceptual hashes, and the grouping of
duplicate pairs into groups.  Pure functions (numpy, Pillow, ``imagehash``); no torch.

- **Exact**: :func:`pixel_digest`, the sha256 of the decoded pixels with their mode and size, so a PNG and a
  lossless re-encode of it (another format, other metadata) hash the same, and a re-saved JPEG does not.
- **Near**: :func:`perceptual_hashes`, the 64-bit pHash (DCT) of the image and of its mirror image (pHash is
  not flip-invariant: a horizontal flip is found by comparing one image's pHash with the other's mirrored pHash).
  Compared by :func:`hamming`.  (dHash was measured too, ``bench/dedup_quality.py``, and is not used: it found no
  copy pHash missed.)  Local verification (keypoints) is :mod:`similarity.verify`; the rule that weighs all the
  signals, and the cache that decodes each file once, are :mod:`similarity.judge`.
- **Groups**: :func:`group_pairs` makes duplicate pairs transitive (connected components), each group sorted
  with its smallest id, the one to keep, first.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from similarity.imageio import DEFAULT_MAX_PIXELS, ImageSource, open_image

log = logging.getLogger(__name__)

HASH_BITS = 64  # imagehash's default hash_size=8: an 8 x 8 bit grid
# The cosine that only identical pixels reach (float rounding) with a class-trained model, whose distinct images of
# one class reach 0.9999 (tests/test_dedup.py): without pixels, the only cosine that proves a copy.
IDENTICAL_COSINE = 0.99999
DEFAULT_MIN_INLIERS = 18  # RANSAC inliers of local verification, bench/verify_pairs.py


@dataclass(frozen=True)
class DuplicateRule:
    """The thresholds of the duplicate rule, applied by :func:`similarity.judge.judge` (its tiers); the
    measurements behind each default are in ``docs/design.md#duplicates``.

    ``cosine``: embedding cosine similarity at least this makes a pair a candidate (only meaningful for the
    model it was measured on); ``phash_bits``: a candidate is a copy when at most this many of the 64 pHash
    bits differ (the mirror image's pHash too when ``flips``; the mirror image's keypoints too in verification);
    ``descriptor_cosine``: for an embedding trained for copies, the cosine at or above which a pair is a copy on
    the embedding alone (None, the default: a class-trained embedding, whose cosine is no proof);
    ``min_inliers``: a candidate the hashes miss is a copy when local verification finds at least this many
    RANSAC inliers (None: no local verification); ``ratio``: the ratio test of that matching;
    ``verify_min_side``: local verification runs only when both images' shorter sides reach this many pixels
    (on 28-px Fashion-MNIST images it finds 12% of copies for 5-10 ms a file, which an upload or a 60k build
    would pay for every candidate); ``min_correlation``: below that size, a candidate the hashes miss is a copy
    when dense alignment (:func:`similarity.verify.aligned_correlation`) reaches this correlation and the
    candidate's misalignment (1 - correlation) is at most ``1 / dense_ratio`` of the query's next-best candidate's
    (:func:`similarity.judge.judge_candidates`; None, the default: no dense verification, which aligns every
    undecided small candidate; ``engine.duplicate_rule.DENSE_MIN_CORRELATION`` is the measured value).
    """

    phash_bits: int = 0
    cosine: float = 0.99
    flips: bool = True
    descriptor_cosine: float | None = None
    min_inliers: int | None = DEFAULT_MIN_INLIERS
    ratio: float = 0.75
    verify_min_side: int = 64
    min_correlation: float | None = None
    dense_ratio: float = 4.0

    def __post_init__(self) -> None:
        if not 0 <= self.phash_bits <= HASH_BITS:
            raise ValueError(f"phash_bits must be in [0, {HASH_BITS}], got {self.phash_bits}")
        if not -1.0 <= self.cosine <= 1.0:
            raise ValueError(f"cosine must be in [-1, 1], got {self.cosine}")
        if self.descriptor_cosine is not None and not self.cosine <= self.descriptor_cosine <= 1.0:
            raise ValueError(f"descriptor_cosine must be None or in [cosine, 1] = [{self.cosine}, 1], "
                             f"got {self.descriptor_cosine}")
        if self.min_inliers is not None and self.min_inliers < 3:
            raise ValueError(f"min_inliers must be None (no local verification) or >= 3, got {self.min_inliers}")
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {self.ratio}")
        if self.verify_min_side < 1:
            raise ValueError(f"verify_min_side must be >= 1 pixel, got {self.verify_min_side}")
        if self.min_correlation is not None and not -1.0 < self.min_correlation <= 1.0:
            raise ValueError(f"min_correlation must be None (no dense verification) or in (-1, 1], "
                             f"got {self.min_correlation}")
        if not self.dense_ratio >= 1.0:
            raise ValueError(f"dense_ratio must be >= 1, got {self.dense_ratio}")


@dataclass(frozen=True)
class ImageHashes:
    """The pixel signals of one image: ``exact`` (sha256 hex) and the 64-bit pHash of it and of its mirror."""

    exact: str
    phash: int
    phash_mirror: int


def pixel_digest(image: Image.Image) -> str:
    """sha256 (hex) of a decoded image's mode, size and raw pixels: equal for lossless re-encodes."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode("ascii"))
    digest.update(image.tobytes())
    return digest.hexdigest()


def hash_int(value: imagehash.ImageHash) -> int:
    """An ``ImageHash`` as an int, bits in row-major order, first bit highest (``int(str(value), 16)``)."""
    return int.from_bytes(np.packbits(value.hash.ravel()).tobytes(), "big")


def perceptual_hashes(image: Image.Image) -> ImageHashes:
    """All pixel signals of a decoded image (see :func:`open_image`)."""
    return ImageHashes(exact=pixel_digest(image), phash=hash_int(imagehash.phash(image)),
                       phash_mirror=hash_int(imagehash.phash(ImageOps.mirror(image))))


def image_hashes(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHashes:
    """Decode ``source`` with :func:`open_image` (raises ``ImageDecodeError``) and hash it."""
    return perceptual_hashes(open_image(source, max_pixels=max_pixels))


def hamming(a, b) -> np.ndarray:
    """Differing bits between 64-bit hashes; ``a``, ``b``: ints or uint64 arrays, broadcast (``a[:, None]`` and
    ``b[None, :]`` give the ``(n, m)`` table).  Returns uint8."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    return np.bitwise_count(np.bitwise_xor(a, b))


def phash_distance(a: ImageHashes, b: ImageHashes, *, flips: bool = True) -> int:
    """pHash bits that differ between two images; with ``flips``, the smallest of that and the distances
    between either one's mirror image and the other (symmetric)."""
    plain = int(hamming(a.phash, b.phash))
    if not flips:
        return plain
    return min(plain, int(hamming(a.phash_mirror, b.phash)), int(hamming(a.phash, b.phash_mirror)))


def group_pairs(pairs: np.ndarray) -> list[list[int]]:
    """Duplicate groups from duplicate pairs, transitively: a~b and b~c put a, b and c in one group.

    ``pairs``: ``(m, 2)`` int ids (any int64 values, in any order, repeats allowed).  Returns the groups of two
    or more ids, each sorted ascending (its first id is the representative, the one a dedup keeps), the groups
    sorted by that first id: the same pairs always give the same groups.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    if not len(pairs):
        return []
    ids, dense = np.unique(pairs, return_inverse=True)
    dense = dense.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(dense), dtype=np.int8), (dense[:, 0], dense[:, 1])), shape=(len(ids),) * 2)
    _, component = connected_components(graph, directed=False)
    order = np.lexsort((ids, component))  # by component, then id
    bounds = np.flatnonzero(np.diff(component[order])) + 1
    groups = [ids[chunk].tolist() for chunk in np.split(order, bounds)]
    return sorted((g for g in groups if len(g) > 1), key=lambda g: g[0])

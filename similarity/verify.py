"""Local verification of a near-duplicate pair: keypoints and descriptors (OpenCV SIFT), ratio-test matching and
a RANSAC similarity transform (``cv2.estimateAffinePartial2D``: rotation, uniform scale, translation).  The
number of matches that transform explains (inliers) is the evidence: a crop, a resize, a re-save or a brightness
change of one photo keeps its keypoints where the transform puts them; two different photos of one class do not.

Below :data:`MIN_SIDE`'s reach (a 28-px image has a handful of keypoints), a pair is verified densely instead:
:func:`aligned_correlation` warps one image onto the other (``cv2.findTransformECC``, an affine warp from a
coarse-to-fine search) and measures how well their pixels agree where they overlap.

Images are worked on in grayscale at a working size: a tiny image (Fashion-MNIST is 28 x 28) is upscaled so its
shorter side reaches :data:`MIN_SIDE` (detectors find nothing at 28 px), a big one is capped at :data:`MAX_SIDE`
on its longer side.  SIFT separates copies from distinct same-class pairs better than ORB on both the photos and
Fashion-MNIST (``bench/verify_pairs.py``, ``docs/benchmarks.md#local-verification``).  No torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

MIN_SIDE = 160  # px: the shorter side a tiny image is upscaled to before detection
MAX_SIDE = 512  # px: the longer side a big image is shrunk to
RATIO = 0.75  # Lowe's ratio test: best match distance < RATIO x second best
RANSAC_PX = 4.0  # reprojection error (working-size px) of an inlier
MAX_FEATURES = 1000  # keypoints kept per image (the strongest)
ALIGN_SIDE = 32  # px: dense alignment works on both images resized to this square
ALIGN_BLUR = 0.7  # px at ALIGN_SIDE: a Gaussian blur first, so that resampling and JPEG noise weigh less
ALIGN_ITERATIONS = 100  # ECC iterations at most
ALIGN_EPS = 1e-5  # ECC stops when the correlation improves less than this
ALIGN_SCALE = (0.6, 1.6)  # the per-axis scale a plausible warp keeps within (crops up to 10% a side: 0.8-1.25)
ALIGN_SHEAR = 0.3  # the off-diagonal terms a plausible warp keeps under (crops and resizes neither rotate nor shear)
ALIGN_OVERLAP = 0.5  # the share of the first image the warped second must cover


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints of one image at its working size: ``points (n, 2) float32`` (x, y) and ``descriptors (n, 128)
    uint8`` (SIFT's values are whole numbers in [0, 255]: a quarter of the memory of float32); ``n`` may be 0."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def capped_gray(image: Image.Image) -> Image.Image:
    """``image`` in grayscale, shrunk to :data:`MAX_SIDE` on its longer side if larger (never enlarged): what a
    cache keeps of a file until its features are needed."""
    gray = image.convert("L")
    if max(gray.size) > MAX_SIDE:
        scale = MAX_SIDE / max(gray.size)
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                           Image.Resampling.LANCZOS)
    return gray


def working_gray(image: Image.Image) -> np.ndarray:
    """``image`` in grayscale at its working size (see the module docstring): ``(h, w) uint8``."""
    gray = image.convert("L")
    short, long = min(gray.size), max(gray.size)
    scale = 1.0
    if short < MIN_SIDE:
        scale = MIN_SIDE / short
    if long * scale > MAX_SIDE:
        scale = MAX_SIDE / long
    if scale != 1.0:
        size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
        gray = gray.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


def mirror_gray(gray: np.ndarray) -> np.ndarray:
    """The horizontal mirror of a working-size image: ``(h, w) uint8``."""
    return np.ascontiguousarray(gray[:, ::-1])


def local_features(gray: np.ndarray, *, max_features: int = MAX_FEATURES) -> LocalFeatures:
    """SIFT keypoints and descriptors of a working-size grayscale image ``(h, w) uint8``."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected an (h, w) uint8 image, got {gray.shape} {gray.dtype}")
    keypoints, descriptors = cv2.SIFT_create(nfeatures=max_features).detectAndCompute(gray, None)
    if descriptors is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    return LocalFeatures(points, np.clip(np.rint(descriptors), 0, 255).astype(np.uint8))


def features_of(image: Image.Image, *, mirrored: bool = False) -> LocalFeatures:
    """:func:`local_features` of a decoded image (of its mirror image with ``mirrored``)."""
    gray = working_gray(ImageOps.mirror(image) if mirrored else image)
    return local_features(gray)


def count_inliers(a: LocalFeatures, b: LocalFeatures, *, ratio: float = RATIO, ransac_px: float = RANSAC_PX) -> int:
    """Matches of ``a`` in ``b`` that pass the ratio test and fit one RANSAC similarity transform: 0 when fewer
    than 3 matches pass (no transform to fit)."""
    if len(a) < 2 or len(b) < 2:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.descriptors.astype(np.float32), b.descriptors.astype(np.float32),
                                                k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < ratio * n.distance]
    if len(good) < 3:
        return 0
    src = a.points[[m.queryIdx for m in good]]
    dst = b.points[[m.trainIdx for m in good]]
    _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=ransac_px,
                                          maxIters=2000, confidence=0.99)
    return 0 if mask is None else int(mask.sum())


def align_thumbnail(gray: np.ndarray) -> np.ndarray:
    """A grayscale image ``(h, w) uint8`` as dense alignment sees it: :data:`ALIGN_SIDE` square, float32 in [0, 1]."""
    small = cv2.resize(gray, (ALIGN_SIDE, ALIGN_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return cv2.GaussianBlur(small, (0, 0), ALIGN_BLUR) if ALIGN_BLUR > 0 else small


def _zncc(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    scale = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum()) / scale if scale > 0 else 0.0


def aligned_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """How well ``b`` explains ``a`` once warped onto it: both :func:`align_thumbnail` squares.  ECC finds the
    affine warp; a warp that scales an axis outside :data:`ALIGN_SCALE`, shears or rotates past
    :data:`ALIGN_SHEAR`, or covers less than :data:`ALIGN_OVERLAP` of ``a`` is no copy's (-1.0).  Otherwise the
    zero-mean normalised correlation of the pixels where the warped ``b`` covers ``a``, in [-1, 1] (1: the same
    pixels up to brightness and contrast)."""
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ALIGN_ITERATIONS, ALIGN_EPS)
    try:
        _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE, criteria, None, 3)
    except cv2.error:  # no convergence: the images do not correlate
        return -1.0
    linear = warp[:, :2]
    scales = np.linalg.norm(linear, axis=0)
    if (not (ALIGN_SCALE[0] < scales.min() and scales.max() < ALIGN_SCALE[1])
            or abs(linear[0, 1]) + abs(linear[1, 0]) > ALIGN_SHEAR):
        return -1.0
    side = a.shape[::-1]
    warped = cv2.warpAffine(b, warp, side, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    covered = cv2.warpAffine(np.ones_like(b), warp, side, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0.5
    covered = cv2.erode(covered.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if covered.mean() < ALIGN_OVERLAP:
        return -1.0
    return _zncc(a[covered], warped[covered])

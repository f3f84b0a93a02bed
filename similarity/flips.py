"""Does a horizontal flip keep an image's class? Measured from the data, not assumed.

Flip augmentation and flip test-time augmentation teach a model that an image and its mirror image are the
same item. That is right for photos of objects and for garments, and wrong where the mirror image is another
class or no class at all (digits, letters, arrows), photographed or drawn.

The check, on a seeded sample stratified by class: each image is made grayscale, centre-cropped to a square and
scaled to ``size`` x ``size``. Half of each class is the gallery, the rest are queries. Flips keep the class
when mirrored queries, searched against the unmirrored gallery, keep most of the queries' above-chance 1-NN
(cosine) class accuracy: a mirrored shirt or shoe still lands among shirts or shoes, a mirrored "3" or "7"
does not land among its own class.

Two representations, neither of them flip invariant (ImageNet features are learnt with flip augmentation, so
a mirrored query would look the same to them whatever the data), each mirroring the image, never its features:

- raw pixels less the gallery's mean image, which separate clean centred images (scanned or drawn digits,
  garments) well;
- a histogram of oriented gradients (HOG): edge directions per 4x4-pixel cell, normalised per block of 2x2
  cells, so that the colours, contrast polarity and lighting of a photo drop out and the shape stays. Raw
  pixels hardly separate photographed digits (house numbers: any colour on any background); HOG does.

The representation that separates the classes better (the larger ``signal``, among those above their own
minimum) decides. Where neither says much about the class (photos of objects: the nearest neighbour is mostly
another shot of the same object in the same pose, and a mirror breaks that match whatever the class), the check
is inconclusive and flips are kept, the standard augmentation for photos. It therefore cannot catch
mirror-sensitive classes that neither representation separates (say, arrows among cluttered scenes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from similarity.data import LabelledImages
from similarity.imageio import ImageDecodeError, scale_to_fit

log = logging.getLogger(__name__)

# Share of the above-chance 1-NN accuracy that mirrored queries must keep for flips to count as class-
# preserving, on raw pixels. Measured (size 32, 600-1000 images, 4-8 seeds each): Fashion-MNIST keeps
# 0.71-0.78 even though all its shoes face left; drawn digits keep 0.24-0.42 and scikit-learn's handwritten
# digits 0.23-0.31 (0, 1 and 8 are nearly symmetric). 0.55 sits in the middle of that gap.
MIN_RETAINED = 0.55

# Raw-pixel 1-NN must get at least this share of the way from chance to perfect accuracy for the check to
# decide. Measured: digit sets 0.51-0.98 (0.40 with randomly mirrored digits), Fashion-MNIST 0.63-0.78;
# photos 0.13-0.25 (trashnet, grocery store), where mirrored accuracy drops a lot for any class; photographed
# digits (tests/digits.py photo_digits) 0.25-0.36, which HOG decides.
MIN_SIGNAL = 0.35

# The same two thresholds for HOG, measured the same way (size 32, 600 images, 6 seeds each). Retained:
# Fashion-MNIST 0.61-0.76 (train and test), against digits 0.20-0.27 (photographed, drawn, scikit-learn's);
# HOG keeps less of Fashion-MNIST than raw pixels do, as edges show the way a shoe faces more sharply than
# its silhouette, so the middle of this gap is lower. Signal: photographed digits 0.74-0.83 (0.66-0.72 when
# randomly mirrored), drawn 0.81-0.85, scikit-learn's 0.92-0.96, Fashion-MNIST 0.67-0.81; photos of objects
# 0.12-0.31 (trashnet 0.15-0.31, grocery store 0.12-0.15). HOG finds the same object in the same pose more
# often than raw pixels, so on those photos mirrored queries keep only 0.10-0.72 of it: the photos' signal
# must stay under this minimum, hence 0.45 rather than the raw-pixel 0.35.
MIN_RETAINED_HOG = 0.45
MIN_SIGNAL_HOG = 0.45

HOG_CELLS = 8  # cells per side: 4x4-pixel cells at size 32
HOG_BINS = 9  # unsigned orientations, 20 degrees each: light-on-dark and dark-on-light digits look alike


@dataclass(frozen=True)
class FlipCheck:
    """Outcome of :func:`check_flips`.

    ``accuracy`` and ``flipped_accuracy`` are 1-NN class accuracies (0..1) of the queries unmirrored and
    mirrored; ``chance`` is the expected accuracy of a random gallery neighbour; ``retained`` is
    ``(flipped_accuracy - chance) / (accuracy - chance)``; ``sampled`` counts the images used;
    ``inconclusive`` means no representation carried enough class signal to judge, and flips are kept;
    ``representation`` names the one the figures come from: "pixels" (raw pixels) or "hog" (histograms of
    oriented gradients).
    """

    preserves_class: bool
    accuracy: float
    flipped_accuracy: float
    chance: float
    retained: float
    sampled: int
    inconclusive: bool = False
    representation: str = "pixels"

    @property
    def signal(self) -> float:
        """Share of the way from chance to perfect that unmirrored 1-NN accuracy gets (0 at chance)."""
        return (self.accuracy - self.chance) / (1.0 - self.chance) if self.chance < 1.0 else 0.0

    @property
    def min_signal(self) -> float:
        """The least ``signal`` at which this check's representation decides."""
        return _REPRESENTATIONS[self.representation].min_signal

    @property
    def min_retained(self) -> float:
        """The least ``retained`` at which this check's representation says that flips keep the class."""
        return _REPRESENTATIONS[self.representation].min_retained

    @property
    def reason(self) -> str:
        """One line a person can read: the verdict and the figures behind it."""
        described = _REPRESENTATIONS[self.representation].description
        figures = (f"1-NN accuracy on {described} {self.accuracy:.2f} unflipped, {self.flipped_accuracy:.2f} "
                   f"mirrored (chance {self.chance:.2f}, {self.sampled} images)")
        if self.inconclusive:
            return (f"flip check inconclusive, flips kept: neither raw pixels nor gradient histograms say enough "
                    f"about the class (at best {described}, {self.signal:.2f} of the way from chance to perfect, "
                    f"under {self.min_signal}); {figures}")
        if self.preserves_class:
            return f"flips keep the class: {figures}"
        return f"flips change the class: {figures}"


def check_flips(data: LabelledImages, *, sample: int = 600, size: int = 32, seed: int = 0) -> FlipCheck:
    """Measure whether mirroring images horizontally keeps their class (see the module docstring).

    ``sample`` images at most are drawn, stratified by class; classes with fewer than two images are left
    out (no gallery/query pair). Unreadable images are skipped. Raises ``ValueError`` when fewer than two
    classes remain to compare.
    """
    if sample < 4:
        raise ValueError(f"sample must be at least 4 images, got {sample}")
    if size < 2:
        raise ValueError(f"size must be at least 2 pixels, got {size}")
    rng = np.random.default_rng(seed)
    chosen = _stratified_sample(data.labels, sample, rng)
    pixels, labels = _pixel_arrays(data, chosen, size)
    gallery, queries = _split_gallery_queries(labels, rng)
    if len(np.unique(labels[gallery])) < 2 or len(queries) == 0:
        raise ValueError(f"need at least two classes with two readable images each; {data.source or 'data'} "
                         f"has {len(np.unique(labels))} usable class(es)")

    yg, yq = labels[gallery], labels[queries]
    chance = _chance_accuracy(yq, yg)
    checks = []
    for representation in _REPRESENTATIONS.values():
        rows, mirrored_rows = representation.embed(pixels, gallery)
        accuracy = _nearest_neighbour_accuracy(rows[queries], yq, rows[gallery], yg)
        flipped_accuracy = _nearest_neighbour_accuracy(mirrored_rows[queries], yq, rows[gallery], yg)
        gain = accuracy - chance
        retained = (flipped_accuracy - chance) / gain if gain > 0 else 1.0
        check = FlipCheck(preserves_class=retained >= representation.min_retained, accuracy=accuracy,
                          flipped_accuracy=flipped_accuracy, chance=chance, retained=float(retained),
                          sampled=len(labels), representation=representation.name)
        if check.signal < representation.min_signal:
            check = replace(check, preserves_class=True, inconclusive=True)
        log.debug("flip check on %s: %s", representation.name, check.reason)
        checks.append(check)
    check = max(checks, key=lambda c: (not c.inconclusive, c.signal))
    log.info("%s", check.reason)
    return check


@dataclass(frozen=True)
class _Representation:
    """What the 1-NN check compares, and the thresholds measured for it. ``embed(pixels, gallery)`` takes
    grayscale ``(n, size, size)`` float32 and the gallery's indices, and gives L2-normalised rows ``(n, d)`` of
    the images and of their mirror images."""

    name: str
    description: str
    min_signal: float
    min_retained: float
    embed: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _pixel_rows(pixels: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels less the gallery's mean image, and the mirror images of what is left."""
    # What every image shares (lighting from one side, framing) is no evidence of class: remove the gallery's
    # mean image, then mirror only what is left, so a mirrored query keeps the usual lighting and framing.
    deviations = pixels - pixels[gallery].mean(axis=0)
    return _normalise(deviations), _normalise(deviations[:, :, ::-1])


def _hog_rows(pixels: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of oriented gradients of the images and of their mirror images (mirrored before HOG)."""
    return _normalise(_hog(pixels)), _normalise(_hog(pixels[:, :, ::-1]))


def _hog(images: np.ndarray) -> np.ndarray:
    """Histograms of oriented gradients of ``images: (n, h, w)``: rows ``(n, d)`` float32.

    Gradients by central differences; each pixel votes its gradient magnitude into the two nearest of
    ``HOG_BINS`` unsigned orientation bins; votes are summed over a grid of ``HOG_CELLS`` x ``HOG_CELLS`` cells;
    each block of 2x2 neighbouring cells is L2-normalised, clipped at 0.2 and normalised again (Dalal and
    Triggs' L2-Hys), so that contrast and lighting drop out. Images under 2 pixels a cell get 1-pixel cells.
    """
    n, height, width = images.shape
    gx, gy = np.zeros_like(images), np.zeros_like(images)
    gx[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
    gy[:, 1:-1, :] = images[:, 2:, :] - images[:, :-2, :]
    magnitude = np.hypot(gx, gy)
    position = (np.arctan2(gy, gx) % np.pi) / np.pi * HOG_BINS - 0.5  # bin centres at 10, 30, ..., 170 degrees
    lower = np.floor(position)
    upper_share = position - lower
    lower = lower.astype(np.int64) % HOG_BINS
    votes = np.zeros((n, height, width, HOG_BINS), np.float32)
    np.put_along_axis(votes, lower[..., None], (magnitude * (1 - upper_share))[..., None], axis=-1)
    np.put_along_axis(votes, ((lower + 1) % HOG_BINS)[..., None], (magnitude * upper_share)[..., None], axis=-1)

    cell = max(1, min(height, width) // HOG_CELLS)
    rows, cols = height // cell, width // cell
    cells = votes[:, :rows * cell, :cols * cell].reshape(n, rows, cell, cols, cell, HOG_BINS).sum(axis=(2, 4))
    if rows < 2 or cols < 2:
        return _l2_hys(cells).reshape(n, -1)
    blocks = np.concatenate([cells[:, :-1, :-1], cells[:, 1:, :-1], cells[:, :-1, 1:], cells[:, 1:, 1:]], axis=-1)
    return _l2_hys(blocks).reshape(n, -1)


def _l2_hys(histograms: np.ndarray) -> np.ndarray:
    """Each histogram (last axis) L2-normalised, clipped at 0.2 and L2-normalised again."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)

    return unit(np.minimum(unit(histograms), 0.2))


_REPRESENTATIONS = {
    representation.name: representation for representation in (
        _Representation("pixels", "raw pixels", MIN_SIGNAL, MIN_RETAINED, _pixel_rows),
        _Representation("hog", "gradient histograms (HOG)", MIN_SIGNAL_HOG, MIN_RETAINED_HOG, _hog_rows),
    )
}


def _stratified_sample(labels: np.ndarray, sample: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``sample`` images, each class in proportion to its size (at least 2 per class)."""
    classes, counts = np.unique(labels, return_counts=True)
    keep = counts >= 2
    classes, counts = classes[keep], counts[keep]
    share = sample / max(1, counts.sum())
    chosen = []
    for label, count in zip(classes, counts):
        members = np.flatnonzero(labels == label)
        take = min(count, max(2, round(count * share)))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def _pixel_arrays(data: LabelledImages, indices: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grayscale pixels ``(n, size, size)`` float32 and labels ``(n,)`` of the readable images among ``indices``."""
    rows, labels = [], []
    for i in indices:
        try:
            image = data.load(int(i))
        except ImageDecodeError as exc:
            log.warning("flip check: skipping unreadable image %s", exc)
            continue
        rows.append(_square_pixels(image, size))
        labels.append(data.labels[i])
    if not rows:
        return np.zeros((0, size, size), np.float32), np.zeros(0, np.int64)
    return np.stack(rows), np.asarray(labels, dtype=np.int64)


def _square_pixels(image: Image.Image, size: int) -> np.ndarray:
    """Grayscale, centre-cropped to a square, scaled to ``size`` x ``size``: float32 ``(size, size)``."""
    gray = image.convert("L")
    width, height = gray.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = scale_to_fit(gray.crop((left, top, left + side, top + side)), size)
    return np.asarray(square, dtype=np.float32)


def _normalise(images: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` images as rows ``(n, h * w)``, each centred and L2-normalised so that a dot product is a
    cosine (a flat image stays all zeros)."""
    x = images.reshape(len(images), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _split_gallery_queries(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per class, half the images (rounded up) to the gallery and the rest to the queries."""
    gallery, queries = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = (len(members) + 1) // 2
        gallery.append(members[:cut])
        queries.append(members[cut:])
    if not gallery:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    return np.sort(np.concatenate(gallery)), np.sort(np.concatenate(queries))


def _nearest_neighbour_accuracy(xq: np.ndarray, yq: np.ndarray, xg: np.ndarray, yg: np.ndarray) -> float:
    """Share of queries ``xq: (nq, d)`` whose most cosine-similar gallery row ``xg: (ng, d)`` has their label."""
    nearest = np.argmax(xq @ xg.T, axis=1)
    return float(np.mean(yg[nearest] == yq))


def _chance_accuracy(yq: np.ndarray, yg: np.ndarray) -> float:
    """Expected accuracy of a neighbour drawn at random from the gallery: sum over classes of the shares."""
    n_classes = int(max(yq.max(), yg.max())) + 1
    query_share = np.bincount(yq, minlength=n_classes) / len(yq)
    gallery_share = np.bincount(yg, minlength=n_classes) / len(yg)
    return float(query_share @ gallery_share)

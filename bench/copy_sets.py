"""The copy-detection sets of ``bench/dedup_quality.py``: edited copies, one family of edits at a time, and the
references (originals plus distinct distractors) they are searched among.

Families (:data:`FAMILIES`), each drawn from the ``numpy.random.Generator`` given: ``crop`` (0-10% off each side),
``resize`` (x0.5-1.2), ``jpeg`` (a re-save at quality 30-90), ``brightness`` (x0.85-1.15), ``flip`` (horizontal
mirror), ``overlay`` (text in Pillow's default font, or a filled box or ellipse standing for a logo: the
overlay of :mod:`similarity.copy_augment`) and ``all`` (crop, resize, brightness, a flip one time in two,
overlay, then JPEG).  Every copy goes through encoded bytes (JPEG for ``jpeg`` and ``all``, else PNG) and
:func:`similarity.imageio.open_image`, as an upload would, and keeps its original's mode (a grayscale image stays
grayscale).

*Distinct* means distinct decoded pixels: a pool's images with the same :func:`similarity.hygiene.pixel_digest`
as an earlier one are dropped before anything is drawn (TrashNet-150 has 3 such photos, filed under two classes).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from tqdm.auto import tqdm

from bench.copy_eval import UNMATCHED
from similarity.copy_augment import overlay  # the one overlay the copy objective trains on
from similarity.data import load_fashion_mnist, load_image_folder
from similarity.hygiene import pixel_digest
from similarity.imageio import open_image

DATASETS = "/work/shared/datasets"  # where the other benches find TrashNet-150 too
FAMILIES = ("crop", "resize", "jpeg", "brightness", "flip", "overlay", "all")


def _through_bytes(image: Image.Image, mode: str, fmt: str = "PNG", **options) -> Image.Image:
    """``image`` in ``mode``, encoded as ``fmt`` and decoded again with :func:`open_image`."""
    out = image.convert(mode) if image.mode != mode else image
    buffer = io.BytesIO()
    out.save(buffer, format=fmt, **options)
    return open_image(buffer.getvalue())


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    left, top, right, bottom = (rng.uniform(0, 0.10, 4) * [w, h, w, h]).round().astype(int)
    return image.crop((left, top, w - right, h - bottom))


def _resize(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    scale = rng.uniform(0.5, 1.2)
    return image.resize((max(8, round(image.width * scale)), max(8, round(image.height * scale))),
                        Image.Resampling.LANCZOS)


def _brightness(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.85, 1.15)))


def _overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return overlay(image.convert("RGB"), rng)


def edited_copy(image: Image.Image, family: str, rng: np.random.Generator) -> Image.Image:
    """A copy of ``image`` edited by one of :data:`FAMILIES`, through encoded bytes, in ``image``'s mode."""
    mode = image.mode if image.mode in ("L", "RGB") else "RGB"
    if family == "jpeg":
        return _through_bytes(image, mode, "JPEG", quality=int(rng.integers(30, 91)))
    if family == "all":
        out = _brightness(_resize(_crop(image, rng), rng), rng)
        if rng.random() < 0.5:
            out = ImageOps.mirror(out)
        return _through_bytes(_overlay(out, rng), mode, "JPEG", quality=int(rng.integers(30, 91)))
    edits: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
        "crop": _crop, "resize": _resize, "brightness": _brightness, "flip": lambda im, _: ImageOps.mirror(im),
        "overlay": _overlay}
    if family not in edits:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    return _through_bytes(edits[family](image, rng), mode)


@dataclass
class ImagePool:
    """Decodable images of one kind: ``load(i)`` for ``i < size``, ``source[i]`` names where image ``i`` is from."""

    load: Callable[[int], Image.Image]
    source: list[str]

    @property
    def size(self) -> int:
        return len(self.source)


def distinct_rows(pool: ImagePool, *, desc: str) -> tuple[np.ndarray, list[str], int]:
    """The rows of ``pool`` whose decoded pixels no earlier row has, their pixel digests, and how many rows were
    dropped."""
    seen: set[str] = set()
    keep, digests = [], []
    for i in tqdm(range(pool.size), desc=f"{desc}: distinct pixels", unit="img", leave=False):
        digest = pixel_digest(pool.load(i))
        if digest not in seen:
            seen.add(digest)
            keep.append(i)
            digests.append(digest)
    return np.asarray(keep, dtype=np.int64), digests, pool.size - len(keep)


def fashion_mnist_pools() -> tuple[ImagePool, ImagePool]:
    """(the test split: originals and unmatched queries, the train split: distractors), 28 x 28 grayscale."""
    test, train = load_fashion_mnist(None, "test"), load_fashion_mnist(None, "train")
    return (ImagePool(test.load, [f"fashion-mnist:{i}" for i in test.ids]),
            ImagePool(train.load, [f"fashion-mnist:{i}" for i in train.ids]))


def folder_pool(*roots: str) -> ImagePool:
    """Every image of the class folders under ``roots``, in order, decoded from its file."""
    paths = []
    for root in roots:
        paths += [(root, p) for p in load_image_folder(root, verify=False).paths]
    return ImagePool(lambda i: open_image(paths[i][1]),
                     [f"{os.path.basename(root)}:{os.path.relpath(p, root)}" for root, p in paths])


@dataclass
class CopySet:
    """One data set's task. ``references``: originals and distractors, shuffled (so that tied scores favour no
    one); ``queries``: per family one copy of each original, and one copy of each unmatched image (its original
    not among the references); ``family[q]`` and ``truth[q]`` (the reference row of query q's original, or
    :data:`~bench.copy_eval.UNMATCHED`)."""

    name: str
    references: list[Image.Image] = field(default_factory=list)
    reference_source: list[str] = field(default_factory=list)
    queries: list[Image.Image] = field(default_factory=list)
    family: list[str] = field(default_factory=list)
    truth: list[int] = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def build_copy_set(name: str, query_pool: ImagePool, distractor_pool: ImagePool, *, originals: int,
                   unmatched: int, distractors: int, rng: np.random.Generator) -> CopySet:
    """Draw ``originals`` and ``unmatched`` images from ``query_pool`` and up to ``distractors`` others from
    ``distractor_pool`` (which may hold ``query_pool``'s images: the drawn ones are left out by pixels), all of
    distinct pixels, and make the copies."""
    query_rows, query_digests, dropped_from_queries = distinct_rows(query_pool, desc=name)
    if originals + unmatched > len(query_rows):
        raise SystemExit(f"{name}: {originals} originals + {unmatched} unmatched > {len(query_rows)} distinct images")
    drawn = rng.permutation(len(query_rows))[:originals + unmatched]
    taken = {query_digests[j] for j in drawn}
    original_rows, unmatched_rows = query_rows[drawn[:originals]], query_rows[drawn[originals:]]
    spare, spare_digests, dropped_from_distractors = distinct_rows(distractor_pool, desc=f"{name} distractors")
    available = np.array([spare[j] for j in rng.permutation(len(spare)) if spare_digests[j] not in taken],
                         dtype=np.int64)
    distractor_rows = available[:distractors]

    out = CopySet(name)
    order = rng.permutation(len(original_rows) + len(distractor_rows))  # reference row of each drawn image
    entries = [(query_pool, int(i)) for i in original_rows] + [(distractor_pool, int(i)) for i in distractor_rows]
    slots: list = [None] * len(entries)
    for position, (pool, i) in zip(order, entries):
        slots[position] = (pool, i)
    for pool, i in tqdm(slots, desc=f"{name}: references", unit="img", leave=False):
        out.references.append(pool.load(i))
        out.reference_source.append(pool.source[i])
    for family in FAMILIES:
        for rank, i in enumerate(tqdm(np.concatenate([original_rows, unmatched_rows]), desc=f"{name}: {family} copies",
                                      unit="img", leave=False)):
            copy_rng = np.random.default_rng((int(rng.integers(2**31)), rank))
            out.queries.append(edited_copy(query_pool.load(int(i)), family, copy_rng))
            out.family.append(family)
            out.truth.append(int(order[rank]) if rank < len(original_rows) else UNMATCHED)
    out.counts = {"originals": len(original_rows), "unmatched_per_family": len(unmatched_rows),
                  "distinct_distractors": len(distractor_rows), "references": len(out.references),
                  "queries": len(out.queries), "distinct_distractors_available": len(available),
                  "distractors_short_of_request": max(0, distractors - len(distractor_rows)),
                  "same_pixels_dropped": {"query_pool": dropped_from_queries,
                                          "distractor_pool": dropped_from_distractors},
                  "query_pool": query_pool.source[0].split(":")[0], "query_pool_size": query_pool.size,
                  "distractor_pool": sorted({s.split(":")[0] for s in distractor_pool.source}),
                  "distractor_pool_size": distractor_pool.size}
    return out


__all__ = ["FAMILIES", "CopySet", "ImagePool", "build_copy_set", "edited_copy", "fashion_mnist_pools", "folder_pool"]

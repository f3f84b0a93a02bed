"""Edited copies of indexed images as queries, for comparing two indexes of the same items without labels
(``simsearch evaluate --copies N``, :mod:`engine.evaluate`).

A seeded sample of items that both indexes hold is decoded and each image edited once by
:func:`similarity.copy_augment.make_copy` (the edits the copy objective trains and validates with: crops, resizes,
colour, JPEG, overlays, flips). Each side searches each copy with the model that finds its duplicates
(:attr:`Engine.duplicate_embedder`) in the view duplicates are searched in (:attr:`Engine.duplicate_space`); a copy
is found at rank r when its original is the r-th nearest item. Per query: ``copy_recall_at_1`` (1 when the original
is the nearest item) and ``copy_reciprocal_rank`` (1 / (r + 1) within the ``k`` nearest, else 0).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.engine import Engine
from similarity.copy_augment import make_copy
from similarity.imageio import ImageDecodeError

logger = logging.getLogger(__name__)

COPY_METRICS = {"copy_recall_at_1": "copy recall@1", "copy_reciprocal_rank": "copy reciprocal rank"}


@dataclass(frozen=True)
class CopyQueries:
    """``ids (n,) int64``: the originals, held by both indexes; ``images``: an edited copy of each, as PNG bytes;
    ``sampled``: items drawn; ``skipped``: drawn items whose file could not be read."""

    ids: np.ndarray
    images: list[bytes]
    sampled: int
    skipped: int


def copy_queries(old: Engine, new: Engine, n: int, rng: np.random.Generator) -> CopyQueries:
    """Up to ``n`` items of ``old`` that ``new`` holds too (drawn with ``rng``), each edited once (with ``rng``)."""
    drawn = old.random_items(n, rng)
    shared = new.store.get_many([item.id for item in drawn])
    ids, images, skipped = [], [], 0
    for item in drawn:
        if item.id not in shared:
            continue
        try:
            image = old.open_file(item)
        except ImageDecodeError as exc:
            logger.warning("copies: item %d left out: %s", item.id, exc)
            skipped += 1
            continue
        buffer = io.BytesIO()
        make_copy(image, rng).save(buffer, "PNG")
        ids.append(item.id)
        images.append(buffer.getvalue())
    return CopyQueries(np.asarray(ids, dtype=np.int64), images, len(drawn), skipped)


def score_copies(engine: Engine, queries: CopyQueries, k: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Per query ``(n,) float64`` values of :data:`COPY_METRICS` on ``engine``'s side."""
    ranks = np.full(len(queries.ids), -1)
    for start in range(0, len(queries.ids), batch):
        images = [Image.open(io.BytesIO(data)) for data in queries.images[start:start + batch]]
        xq = np.asarray(engine.duplicate_embedder.embed_images(images), dtype=np.float32)
        for row, hits in enumerate(engine.duplicate_space.search(xq, k), start):
            ranks[row] = next((r for r, hit in enumerate(hits) if hit.id == queries.ids[row]), -1)
    found = ranks >= 0
    return {"copy_recall_at_1": (ranks == 0).astype(np.float64),
            "copy_reciprocal_rank": np.where(found, 1.0 / (ranks + 1.0), 0.0)}


__all__ = ["COPY_METRICS", "CopyQueries", "copy_queries", "score_copies"]

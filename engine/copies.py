"""Copies of outside files in an index (``simsearch index dedup INDEX --queries DIR``): each image file is decoded
once, embedded with the model that finds the index's duplicates (its copy descriptor where it keeps one), searched,
and each candidate judged by :func:`similarity.judge.judge` (the rule of ``index dedup`` and of ingestion).
Unreadable files are reported, not raised."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.dedup import DEFAULT_NEIGHBOURS, SEARCH_BATCH
from engine.engine import Engine
from index import VectorStore
from similarity.hygiene import DuplicateRule
from similarity.imageio import DEFAULT_MAX_PIXELS, ImageDecodeError, is_image_path, open_image
from similarity.judge import ImageSignals, Pair, SignalCache, judge_candidates

log = logging.getLogger(__name__)

EMBED_BATCH = 32  # query files decoded and embedded at a time


@dataclass(frozen=True)
class QueryCopies:
    """The copies of one outside file in an index: ``copies`` are ``{"id", "label", "path", "verdict"}`` dicts,
    most similar first; ``error`` names why the file could not be read (then no copies)."""

    query: str
    copies: list[dict]
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def find_copies(store: VectorStore, xq: np.ndarray, queries: Sequence[ImageSignals], *,
                rule: DuplicateRule = DuplicateRule(), neighbours: int = DEFAULT_NEIGHBOURS,
                cache: SignalCache | None = None) -> list[QueryCopies]:
    """Each query's copies among its ``neighbours`` nearest items: every hit at ``rule.cosine`` or more that the
    judge accepts.  ``xq: (n, d) float32`` the queries' embeddings, ``queries`` their signals (in that order)."""
    if xq.ndim != 2 or len(xq) != len(queries):
        raise ValueError(f"xq must be (n, d) with one row per query ({len(queries)}), got shape {xq.shape}")
    if neighbours < 1:
        raise ValueError(f"neighbours must be >= 1, got {neighbours}")
    cache = cache if cache is not None else SignalCache()
    found = []
    for start in range(0, len(xq), SEARCH_BATCH):
        for query, row in zip(queries[start:start + SEARCH_BATCH], store.search(xq[start:start + SEARCH_BATCH],
                                                                                  neighbours)):
            hits = [hit for hit in row if hit.similarity >= rule.cosine]  # best first
            verdicts = judge_candidates([Pair(query, cache.get(hit.path), hit.similarity) for hit in hits], rule)
            copies = [{"id": hit.id, "label": hit.label, "path": hit.path, "verdict": verdict.to_dict()}
                      for hit, verdict in zip(hits, verdicts) if verdict.duplicate]
            found.append(QueryCopies(query.name, copies))
    return found


def image_files(folder: str | os.PathLike) -> list[str]:
    """The image files under ``folder`` (recursively, by extension), sorted; ``ValueError`` if it is no folder."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"--queries must be a folder of images, got {str(folder)!r}")
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and is_image_path(p))


def find_copies_of_files(engine: Engine, paths: Sequence[str], *, rule: DuplicateRule | None = None,
                         neighbours: int = DEFAULT_NEIGHBOURS, max_pixels: int = DEFAULT_MAX_PIXELS
                         ) -> list[QueryCopies]:
    """The copies in ``engine``'s index of each file of ``paths`` (in that order): decoded once, embedded with the
    index's model, judged against its ``neighbours`` nearest items.  A file that cannot be decoded gets
    ``error`` and no copies.  ``rule``: default the index's own (:attr:`Engine.duplicate_rule`)."""
    rule = rule if rule is not None else engine.duplicate_rule
    results: dict[int, QueryCopies] = {}
    cache = SignalCache(max_pixels=max_pixels)
    for start in range(0, len(paths), EMBED_BATCH):
        rows, images = [], []
        for row in range(start, min(start + EMBED_BATCH, len(paths))):
            try:
                images.append(open_image(paths[row], max_pixels=max_pixels))
                rows.append(row)
            except ImageDecodeError as exc:
                log.warning("copies of %s: unreadable: %s", paths[row], exc)
                results[row] = QueryCopies(paths[row], [], str(exc))
        if not rows:
            continue
        xq = engine.duplicate_embedder.embed_images(images)
        signals = [ImageSignals(paths[row], image) for row, image in zip(rows, images)]
        images.clear()
        found_copies = find_copies(engine.duplicate_space, np.asarray(xq, np.float32), signals, rule=rule,
                                   neighbours=neighbours, cache=cache)
        for row, found in zip(rows, found_copies):
            results[row] = found
    return [results[row] for row in range(len(paths))]

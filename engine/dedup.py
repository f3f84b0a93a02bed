"""Duplicates inside an index: found through the index's own search, grouped, listed, and optionally removed.

Near-duplicate candidates are pairs whose embeddings' cosine reaches the threshold among each item's ``k``
nearest neighbours (``VectorStore.search`` in batches: the ANN index does the work, memory is the ``(n, d)``
vectors plus one batch of hits, never an ``n x n`` matrix).  With ``pixels=True`` the files of the candidates
are decoded, each once (an exact copy embeds to the same vector, so it is always a candidate as long as an
item has at most ``neighbours`` copies): items whose decoded pixels hash the same are exact duplicates
(:func:`similarity.hygiene.pixel_digest`), and another candidate pair counts only when its pHash (or its
mirror's) confirms it.  A model trained to group classes puts
distinct images of one class at a cosine as high as a re-saved copy (``bench/dedup_quality.py``: 30% of
Fashion-MNIST images have a distinct neighbour at cosine >= 0.99 with the demo model), so the cosine alone
finds candidates, not proof.  Pairs become groups transitively (:func:`similarity.hygiene.group_pairs`); each
group keeps its oldest item (the smallest id among equally old ones: Milvus ids are random, not ordered).
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from durablefile import atomic_write
from index import ItemMeta, VectorStore
from report.thumbnails import thumbnail_uris
from similarity.hygiene import DuplicateRule, HashCache, ImageHashes, group_pairs, phash_distance

logger = logging.getLogger(__name__)

DEFAULT_NEIGHBOURS = 10  # nearest neighbours examined per item
SEARCH_BATCH = 1024  # queries per store.search call
GROUPS_JSON = "duplicates.json"
GROUPS_HTML = "duplicates.html"


@dataclass(frozen=True)
class DuplicateMember:
    """One item of a group: ``similarity`` is its embedding cosine to the group's kept item."""

    id: int
    label: str
    path: str
    similarity: float


@dataclass(frozen=True)
class DuplicateGroup:
    """Items that duplicate each other, oldest first; ``members[0]`` is kept by a dedup.

    ``exact``: all members have the same decoded pixels (only known when pixels were hashed);
    ``mixed_labels``: the members do not all carry one label (a likely labelling error)."""

    members: list[DuplicateMember]
    exact: bool

    @property
    def keep(self) -> int:
        return self.members[0].id

    @property
    def remove(self) -> list[int]:
        return [m.id for m in self.members[1:]]

    @property
    def mixed_labels(self) -> bool:
        return len({m.label for m in self.members}) > 1

    def to_dict(self) -> dict:
        return {"keep": self.keep, "remove": self.remove, "exact": self.exact, "mixed_labels": self.mixed_labels,
                "members": [asdict(m) for m in self.members]}


@dataclass
class DuplicateReport:
    """The groups of one index and how they were found."""

    groups: list[DuplicateGroup]
    items: int
    threshold: float
    neighbours: int
    pixels: bool
    near_pairs: int
    exact_pairs: int
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    queried: int | None = None  # items whose neighbours were searched (None: every item)

    @property
    def duplicates(self) -> list[int]:
        """The ids a dedup removes: all but the first of each group, sorted."""
        return sorted(i for g in self.groups for i in g.remove)

    def summary(self) -> dict:
        return {"items": self.items, "groups": len(self.groups), "exact_groups": sum(g.exact for g in self.groups),
                "near_groups": sum(not g.exact for g in self.groups),
                "mixed_label_groups": sum(g.mixed_labels for g in self.groups),
                "items_in_groups": sum(len(g.members) for g in self.groups), "duplicates": len(self.duplicates),
                "threshold": self.threshold, "neighbours": self.neighbours, "pixels": self.pixels,
                "queried": self.items if self.queried is None else self.queried,
                "near_pairs": self.near_pairs, "exact_pairs": self.exact_pairs, "unreadable": len(self.unreadable),
                "seconds": round(self.seconds, 3)}

    def to_dict(self) -> dict:
        return {**self.summary(), "unreadable_files": self.unreadable, "groups": [g.to_dict() for g in self.groups]}


def near_duplicate_pairs(store: VectorStore, ids: np.ndarray, xb: np.ndarray, *, threshold: float,
                         neighbours: int = DEFAULT_NEIGHBOURS, batch: int = SEARCH_BATCH,
                         progress: bool = False) -> np.ndarray:
    """Pairs ``(m, 2) int64`` (smaller id first, unique) of items whose cosine is at least ``threshold``, among
    each item's ``neighbours`` nearest.  ``ids: (n,)``, ``xb: (n, d) float32``: the items to query with."""
    found: set[tuple[int, int]] = set()
    for start in tqdm(range(0, len(ids), batch), desc="duplicates: search", unit="batch", disable=not progress,
                      leave=False):
        hits = store.search(xb[start:start + batch], neighbours + 1)  # +1: the item finds itself
        for item_id, row in zip(ids[start:start + batch].tolist(), hits):
            for hit in row:
                if hit.similarity < threshold:
                    break  # best first
                if hit.id != item_id:
                    found.add((min(item_id, hit.id), max(item_id, hit.id)))
    return np.array(sorted(found), dtype=np.int64).reshape(-1, 2)


def pixel_signals(items: Iterable[ItemMeta], *, progress: bool = False) -> tuple[dict[int, ImageHashes], list[str]]:
    """Decode every item's file once: its :class:`ImageHashes` by id, and the paths of unreadable files."""
    cache = HashCache()
    hashes: dict[int, ImageHashes] = {}
    unreadable = []
    for item in tqdm(items, desc="duplicates: pixels", unit="img", disable=not progress, leave=False):
        found = cache.get(item.path)
        if found is None:
            unreadable.append(item.path)
        else:
            hashes[item.id] = found
    return hashes, unreadable


def exact_duplicate_pairs(hashes: dict[int, ImageHashes]) -> np.ndarray:
    """``(m, 2) int64``: each item paired with the smallest id of the same pixel digest."""
    first: dict[str, int] = {}
    pairs = []
    for item_id in sorted(hashes):
        keeper = first.setdefault(hashes[item_id].exact, item_id)
        if keeper != item_id:
            pairs.append((keeper, item_id))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def confirmed_by_phash(pairs: np.ndarray, hashes: dict[int, ImageHashes], rule: DuplicateRule) -> np.ndarray:
    """The pairs whose two files were both read and whose pHash distance (mirror included when
    ``rule.flips``) is at most ``rule.phash_bits``."""
    keep = [a in hashes and b in hashes and phash_distance(hashes[a], hashes[b], flips=rule.flips) <= rule.phash_bits
            for a, b in pairs.tolist()]
    return pairs[np.array(keep, dtype=bool)] if len(pairs) else pairs


def find_duplicates(store: VectorStore, *, rule: DuplicateRule = DuplicateRule(),
                    neighbours: int = DEFAULT_NEIGHBOURS, pixels: bool = False, sample: int | None = None,
                    seed: int = 0, progress: bool = False) -> DuplicateReport:
    """Duplicate groups of a store: near duplicates by ``rule.cosine`` through ``store.search``, and with
    ``pixels`` exact duplicates by decoded-pixel hash.  ``sample``: search the neighbours of a seeded sample of
    this many items only (every pair found has a sampled member), so the time follows the sample, not the store."""
    if neighbours < 1:
        raise ValueError(f"neighbours must be >= 1, got {neighbours}")
    if sample is not None and sample < 1:
        raise ValueError(f"sample must be >= 1, got {sample}")
    started = time.perf_counter()
    ids, xb = store.all_vectors()
    queried = None
    if sample is not None and sample < len(ids):
        rows = np.sort(np.random.default_rng(seed).choice(len(ids), size=sample, replace=False))
        near = near_duplicate_pairs(store, ids[rows], xb[rows], threshold=rule.cosine, neighbours=neighbours,
                                    progress=progress)
        queried = sample
    else:
        near = near_duplicate_pairs(store, ids, xb, threshold=rule.cosine, neighbours=neighbours, progress=progress)
    hashes, unreadable = {}, []
    if pixels:  # only candidates are decoded: an exact copy embeds identically, so it is a candidate
        candidates = np.unique(near).tolist()
        metas = store.get_many(candidates)
        hashes, unreadable = pixel_signals([metas[i] for i in candidates if i in metas], progress=progress)
    exact = exact_duplicate_pairs(hashes)
    if pixels:
        near = confirmed_by_phash(near, hashes, rule)
    groups = group_pairs(np.concatenate([near, exact]))
    metas = store.get_many([i for g in groups for i in g])
    built = []
    for group in groups:
        rows = np.minimum(np.searchsorted(ids, group), len(ids) - 1)  # ids are sorted
        # left out: items deleted meanwhile (no meta) or added after the vectors were read (not in ids)
        live = [(i, r) for i, r in zip(group, rows.tolist()) if i in metas and ids[r] == i]
        if len(live) < 2:
            continue
        live.sort(key=lambda pair: (metas[pair[0]].added_at, pair[0]))  # the oldest item is kept
        keeper = xb[live[0][1]]
        members = [DuplicateMember(i, metas[i].label, metas[i].path, round(float(xb[r] @ keeper), 6))
                   for i, r in live]
        live = [i for i, _ in live]
        is_exact = pixels and all(i in hashes for i in live) and len({hashes[i].exact for i in live}) == 1
        built.append(DuplicateGroup(members, is_exact))
    report = DuplicateReport(built, len(ids), rule.cosine, neighbours, pixels, len(near), len(exact), unreadable,
                             time.perf_counter() - started, queried)
    logger.info("duplicates: %d groups, %d items to remove, among %d items", len(built), len(report.duplicates),
                len(ids))
    return report


def write_duplicates(report: DuplicateReport, out_dir: str | os.PathLike, *, thumbnails: int = 200,
                     thumb_size: int = 96) -> tuple[str, str]:
    """Write ``duplicates.json`` (every group) and ``duplicates.html`` (thumbnails of the first ``thumbnails``
    groups, mixed-label groups first) into ``out_dir``; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, GROUPS_JSON)
    atomic_write(json_path, json.dumps(report.to_dict(), indent=1).encode("utf-8"))
    shown = sorted(report.groups, key=lambda g: (not g.mixed_labels, g.keep))[:thumbnails]
    uris = iter(thumbnail_uris([m.path for g in shown for m in g.members], thumb_size))
    html_path = os.path.join(out_dir, GROUPS_HTML)
    atomic_write(html_path, _page(report, shown, uris, thumb_size).encode("utf-8"))
    return json_path, html_path


def _page(report: DuplicateReport, shown: list[DuplicateGroup], uris: Iterator[str | None], size: int) -> str:
    summary = report.summary()
    facts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items())
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Duplicate groups</title><style>",
             "body{font-family:sans-serif;margin:1em}.g{border:1px solid #ccc;margin:.5em 0;padding:.4em}",
             ".g.mixed{border-color:#c33}figure{display:inline-block;margin:.2em;text-align:center;font-size:11px}",
             f"img{{width:{size}px;height:{size}px;object-fit:contain;image-rendering:pixelated;background:#eee}}",
             ".remove img{opacity:.55}</style></head><body><h1>Duplicate groups</h1>",
             f"<p>{html.escape(facts)}</p>",
             f"<p>Showing {len(shown)} of {len(report.groups)} groups (groups with different labels first, red). "
             "The first item of each group is kept; the faded ones would be removed.</p>"]
    for group in shown:
        kind = "exact" if group.exact else "near"
        parts.append(f"<div class='g{' mixed' if group.mixed_labels else ''}'><b>{kind}</b> "
                     f"keep {group.keep}{' &middot; different labels' if group.mixed_labels else ''}<br>")
        for position, member in enumerate(group.members):
            uri = next(uris)
            image = f"<img src='{uri}' alt=''>" if uri else "<span>(unreadable)</span>"
            parts.append(f"<figure class='{'keep' if position == 0 else 'remove'}'>{image}<figcaption>"
                         f"{member.id} &middot; {html.escape(member.label)}<br>cos {member.similarity:.4f}"
                         f"</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)

"""The duplicate rule an index uses, chosen from the model it was built with: the one place that decides it.

A class-trained embedding gets :class:`similarity.hygiene.DuplicateRule`'s defaults (its cosine proves nothing on
its own, so it has no ``descriptor`` tier). A copy descriptor (a checkpoint with ``objective == "copies"``) gets two
cosines:

- the **candidate** cosine, at or above which pairs are judged on their pixels (exact, pHash, local verification):
  :data:`CANDIDATE_COSINE`, or the cosine at which its training found 90% precision on held-out copies
  (``metrics["val"]["threshold_at_p90"]``) where that is lower;
- the **descriptor** cosine, at or above which the descriptor alone makes a copy: :data:`DEFAULT_DESCRIPTOR_COSINE`,
  the cosine that ``python -m bench.dedup_quality`` measured at 1% false matches, or the candidate cosine where that
  is higher.

The descriptor cosine also follows the index. A fixed cosine holds its false-match rate only among as many items as
it was measured on: the more items an index holds, the more likely a new image has a distinct item close to it.
So the descriptor-alone cosine is at least the index's **calibrated cosine** (:func:`calibrate`): the
:data:`CALIBRATION_QUANTILE` quantile of the cosine between a seeded sample of its items and each one's nearest other
item. An image that is no copy of anything indexed is a match of the descriptor alone with about
``1 - CALIBRATION_QUANTILE`` probability, however large the index. :class:`CalibrationCache` keeps it per process,
measured again once the index has grown or shrunk by :data:`RECALIBRATE_CHANGE`. (This is not the per-query score
normalisation of :func:`similarity.copies.background_offsets`, which the copy training's validation uses.)

Values given on the command line win. Ingestion, ``index dedup`` (``--queries`` too) and the report all call
:func:`rule_for` (through :meth:`engine.engine.Engine.duplicate_rule_with`).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, replace
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from engine.dedup import judge_pairs
from index.arrays import normalized
from index.base import ItemMeta
from similarity.checkpoint import Checkpoint
from similarity.hygiene import IDENTICAL_COSINE, DuplicateRule

log = logging.getLogger(__name__)

COPIES_OBJECTIVE = "copies"
# the descriptor-alone cosine: python -m bench.dedup_quality measured the copy descriptors' cosine at <= 1% false
# matches over every family of edits at 0.741 (Fashion-MNIST) and 0.752 (TrashNet-150); SSCD uses its own
# descriptors at 0.75 too (about 90% precision on DISC21)
DEFAULT_DESCRIPTOR_COSINE = 0.75
# the candidate cosine: python -m bench.dedup_quality kept pixel-confirmed candidates within 1% false matches over
# every family from cosine 0.504 on TrashNet-150 (on Fashion-MNIST every candidate of the top 10 stayed within 1%);
# python -m bench.second_vector found 95% of edited TrashNet copies from 0.50 and flagged none of 300 outside photos
CANDIDATE_COSINE = 0.50
# dense verification of candidates under verify_min_side, when asked for (index dedup --min-correlation): python -m
# bench.dense_verify found 69.5% of edited Fashion-MNIST copies among 60,000 (56.6% without) for 4 more of 2,000
# outside images flagged, at correlation 0.993 with a misalignment under a quarter of the runner-up's; a threshold
# alone flags far more (0.99: 36%). Off by default: it aligns every undecided small candidate (about 4 ms each; a
# 60k build checks about 600,000 candidate pairs)
DENSE_MIN_CORRELATION = 0.993
# the calibrated cosine: the quantile of the items' nearest-other-item cosines, over a seeded sample of the index
CALIBRATION_QUANTILE = 0.99
CALIBRATION_SAMPLE = 2_000
RECALIBRATE_CHANGE = 0.2  # measure it again once the index holds this share more (or fewer) items
_SEARCH_BATCH = 500


def measured_descriptor_cosine(checkpoint: Checkpoint) -> float | None:
    """The cosine at 90% precision on held-out copies that copy training recorded, or None (not a copy
    descriptor, no validation, or precision never reached 90%)."""
    if checkpoint.objective != COPIES_OBJECTIVE:
        return None
    value = ((checkpoint.metrics or {}).get("val") or {}).get("threshold_at_p90")
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not -1.0 <= value <= 1.0:
        return None
    return float(value)


def candidate_cosine_for(checkpoint: Checkpoint) -> float | None:
    """The cosine from which a copy descriptor's pairs are judged on their pixels: None for a class embedding;
    :data:`CANDIDATE_COSINE`, or the measured threshold at 90% precision (:func:`measured_descriptor_cosine`)
    where that is lower."""
    if checkpoint.objective != COPIES_OBJECTIVE:
        return None
    measured = measured_descriptor_cosine(checkpoint)
    return CANDIDATE_COSINE if measured is None else min(CANDIDATE_COSINE, measured)


def descriptor_cosine_for(checkpoint: Checkpoint) -> float | None:
    """The ``descriptor_cosine`` of the checkpoint's rule: None for a class embedding; for a copy descriptor
    :data:`DEFAULT_DESCRIPTOR_COSINE`, or its candidate cosine where that is higher."""
    candidate = candidate_cosine_for(checkpoint)
    return None if candidate is None else max(DEFAULT_DESCRIPTOR_COSINE, candidate)


def rule_for(checkpoint: Checkpoint, *, cosine: float | None = None, descriptor_cosine: float | None = None,
             calibration: "Calibration | None" = None, **changes: Any) -> DuplicateRule:
    """The duplicate rule for an index built with ``checkpoint``. ``cosine`` / ``descriptor_cosine``: given
    values (None: chosen from the checkpoint, the descriptor cosine raised to ``calibration``'s cosine where that is
    higher); ``changes``: other :class:`DuplicateRule` fields (``phash_bits``, ``min_inliers``, ...). Raises
    ``ValueError`` for values the rule refuses (a ``descriptor_cosine`` below the candidate ``cosine``)."""
    base = DuplicateRule(**changes)
    chosen = descriptor_cosine if descriptor_cosine is not None else descriptor_cosine_for(checkpoint)
    if descriptor_cosine is None and chosen is not None and calibration is not None:
        chosen = max(chosen, calibration.cosine)
    if cosine is None:
        candidate = candidate_cosine_for(checkpoint)
        if descriptor_cosine is not None and candidate is not None:
            candidate = min(candidate, descriptor_cosine)  # a given descriptor cosine below the candidate one
        cosine = min(base.cosine, candidate) if candidate is not None else base.cosine
    return replace(base, cosine=cosine, descriptor_cosine=chosen)


@dataclass(frozen=True)
class Calibration:
    """An index's calibrated cosine: the ``quantile`` of the cosines between ``sampled`` items and each one's nearest
    other item, when the index held ``items``. ``copies``: sampled items left out because their nearest other item
    is a copy of them (the same vector, or pixel evidence: exact, pHash, verification), which the pixel tiers find."""

    cosine: float
    quantile: float
    sampled: int
    copies: int
    items: int

    def to_dict(self) -> dict:
        return {"cosine": round(self.cosine, 4), "quantile": self.quantile, "sampled": self.sampled,
                "copies": self.copies, "items": self.items}


def calibrate(space, rule: DuplicateRule | None = None, *, quantile: float = CALIBRATION_QUANTILE,
              sample: int = CALIBRATION_SAMPLE, seed: int = 0) -> Calibration | None:
    """The calibrated cosine of ``space`` (a store, or an index's descriptor view: ``len``, ``random_ids``,
    ``vectors``, ``search``, ``get_many``) from ``sample`` items drawn with ``seed``: one k=2 search each.

    With ``rule`` (the checkpoint's own, whose ``descriptor_cosine`` the calibration may raise), the nearest pairs
    at or above that cosine are judged on their pixels (``confirm``: verification too) when they could raise it,
    and a pair the pixels confirm is left out with a twin of the same vector: a collection's own copies (shots of
    one scene, re-saves) are not the distinct images the calibration is about. None with fewer than two items, or
    when every sampled item has a copy."""
    items = len(space)
    if items < 2:
        return None
    ids = space.random_ids(sample, np.random.default_rng(seed))
    found = space.vectors(ids)
    ids = [int(i) for i in ids if int(i) in found]
    pairs, cosines, copies = [], [], 0
    for start in range(0, len(ids), _SEARCH_BATCH):
        chunk = ids[start:start + _SEARCH_BATCH]
        for own, hits in zip(chunk, space.search(np.stack([found[i] for i in chunk]), 2)):
            other = next((hit for hit in hits if hit.id != own), None)
            if other is None:
                continue
            if other.similarity >= IDENTICAL_COSINE:
                copies += 1
            else:
                pairs.append((own, other.id))
                cosines.append(other.similarity)
    if not pairs:
        return None
    cosines = np.asarray(cosines, np.float64)
    floor = None if rule is None else rule.descriptor_cosine
    if floor is not None and np.quantile(cosines, quantile, method="higher") >= floor:
        judged = np.flatnonzero(cosines >= floor)
        verdicts = judge_pairs(space, np.asarray(pairs, np.int64)[judged], cosines[judged], rule, pixels=True,
                               confirm=True)
        confirmed = judged[[verdict.confirmed for verdict in verdicts]]
        copies += len(confirmed)
        cosines = np.delete(cosines, confirmed)
        if not len(cosines):
            return None
    cosine = float(np.quantile(cosines, quantile, method="higher"))
    return Calibration(cosine, quantile, len(cosines), copies, items)


class _Hit(NamedTuple):
    id: int
    similarity: float


class MatrixSpace:
    """Vectors in memory (a collection being built, before it has an index), read as :func:`calibrate` reads a
    space: row numbers are the ids, ``paths`` their image files (for the pixel tiers)."""

    def __init__(self, vectors: np.ndarray, paths: Sequence[str] | None = None) -> None:
        import faiss

        self._paths = list(paths) if paths is not None else None

        self._xb = normalized(np.asarray(vectors, dtype=np.float32))
        self._index = faiss.IndexFlatIP(self._xb.shape[1])
        self._index.add(self._xb)

    def __len__(self) -> int:
        return len(self._xb)

    def random_ids(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self._xb), min(n, len(self._xb)), replace=False).astype(np.int64)

    def vectors(self, ids) -> dict[int, np.ndarray]:
        return {int(i): self._xb[int(i)] for i in ids}

    def get_many(self, ids) -> dict[int, ItemMeta]:
        """The rows' image files (``paths``), as a store's items: none without them."""
        if self._paths is None:
            return {}
        return {int(i): ItemMeta(int(i), self._paths[int(i)], "", 0.0) for i in ids if 0 <= int(i) < len(self._paths)}

    def search(self, xq: np.ndarray, k: int) -> list[list[_Hit]]:
        D, I = self._index.search(np.ascontiguousarray(xq, dtype=np.float32), k)
        return [[_Hit(int(i), float(d)) for d, i in zip(row_d, row_i) if i >= 0] for row_d, row_i in zip(D, I)]


class CalibrationCache:
    """One process's :class:`Calibration` of one space, measured when first asked and again once the space's size
    has changed by :data:`RECALIBRATE_CHANGE` since. Thread-safe."""

    def __init__(self, space, rule: DuplicateRule | None = None) -> None:
        self._space = space
        self._rule = rule
        self._value: Calibration | None = None
        self._measured_at: int | None = None
        self._lock = threading.Lock()

    def get(self) -> Calibration | None:
        items = len(self._space)
        with self._lock:
            if self._measured_at is None or abs(items - self._measured_at) > RECALIBRATE_CHANGE * self._measured_at:
                self._value = calibrate(self._space, self._rule)
                self._measured_at = items
                if self._value is not None:
                    log.info("calibrated cosine %.4f (quantile %.3f of %d items' nearest others, %d copies left out, "
                             "%d items)", self._value.cosine, self._value.quantile, self._value.sampled,
                             self._value.copies, self._value.items)
            return self._value


__all__ = ["CALIBRATION_QUANTILE", "CALIBRATION_SAMPLE", "Calibration", "CalibrationCache", "CANDIDATE_COSINE",
           "DEFAULT_DESCRIPTOR_COSINE", "MatrixSpace", "RECALIBRATE_CHANGE", "calibrate", "candidate_cosine_for",
           "descriptor_cosine_for", "measured_descriptor_cosine", "rule_for"]

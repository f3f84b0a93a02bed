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

Values given on the command line win. Ingestion, ``index dedup`` (``--queries`` too) and the report all call
:func:`rule_for`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

from similarity.checkpoint import Checkpoint
from similarity.hygiene import DuplicateRule

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
             **changes: Any) -> DuplicateRule:
    """The duplicate rule for an index built with ``checkpoint``. ``cosine`` / ``descriptor_cosine``: given
    values (None: chosen from the checkpoint); ``changes``: other :class:`DuplicateRule` fields (``phash_bits``,
    ``min_inliers``, ...). Raises ``ValueError`` for values the rule refuses (a ``descriptor_cosine`` below the
    candidate ``cosine``)."""
    base = DuplicateRule(**changes)
    chosen = descriptor_cosine if descriptor_cosine is not None else descriptor_cosine_for(checkpoint)
    if cosine is None:
        candidate = candidate_cosine_for(checkpoint)
        if descriptor_cosine is not None and candidate is not None:
            candidate = min(candidate, descriptor_cosine)  # a given descriptor cosine below the candidate one
        cosine = min(base.cosine, candidate) if candidate is not None else base.cosine
    return replace(base, cosine=cosine, descriptor_cosine=chosen)


__all__ = ["CANDIDATE_COSINE", "DEFAULT_DESCRIPTOR_COSINE", "candidate_cosine_for", "descriptor_cosine_for", "measured_descriptor_cosine",
           "rule_for"]

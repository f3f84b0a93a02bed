"""The duplicate rule an index uses, chosen from the model it was built with: the one place that decides it.

A class-trained embedding gets :class:`similarity.hygiene.DuplicateRule`'s defaults (its cosine proves nothing on
its own, so it has no ``descriptor`` tier). A copy descriptor (a checkpoint with ``objective == "copies"``) gets a
``descriptor_cosine``: the cosine at which its training found 90% precision on held-out copies
(``metrics["val"]["threshold_at_p90"]``), else :data:`DEFAULT_DESCRIPTOR_COSINE`; its candidate cosine is lowered
to that value where it is below 0.99, since a copy descriptor puts edited copies well under 0.99. Values given on
the command line win. Ingestion, ``index dedup`` (``--queries`` too) and the report all call :func:`rule_for`.
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
# the threshold SSCD's own descriptors are used with (cosine 0.75: about 90% precision on DISC21), for a
# copy-trained checkpoint that recorded no threshold of its own (trained without validation images); not measured
# on simsearch's descriptors
DEFAULT_DESCRIPTOR_COSINE = 0.75


def measured_descriptor_cosine(checkpoint: Checkpoint) -> float | None:
    """The cosine at 90% precision on held-out copies that copy training recorded, or None (not a copy
    descriptor, no validation, or precision never reached 90%)."""
    if checkpoint.objective != COPIES_OBJECTIVE:
        return None
    value = ((checkpoint.metrics or {}).get("val") or {}).get("threshold_at_p90")
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not -1.0 <= value <= 1.0:
        return None
    return float(value)


def descriptor_cosine_for(checkpoint: Checkpoint) -> float | None:
    """The ``descriptor_cosine`` of the checkpoint's rule: None for a class embedding; for a copy descriptor the
    measured threshold (:func:`measured_descriptor_cosine`), else :data:`DEFAULT_DESCRIPTOR_COSINE`."""
    if checkpoint.objective != COPIES_OBJECTIVE:
        return None
    measured = measured_descriptor_cosine(checkpoint)
    return measured if measured is not None else DEFAULT_DESCRIPTOR_COSINE


def rule_for(checkpoint: Checkpoint, *, cosine: float | None = None, descriptor_cosine: float | None = None,
             **changes: Any) -> DuplicateRule:
    """The duplicate rule for an index built with ``checkpoint``. ``cosine`` / ``descriptor_cosine``: given
    values (None: chosen from the checkpoint); ``changes``: other :class:`DuplicateRule` fields (``phash_bits``,
    ``min_inliers``, ...). Raises ``ValueError`` for values the rule refuses (a ``descriptor_cosine`` below the
    candidate ``cosine``)."""
    base = DuplicateRule(**changes)
    chosen = descriptor_cosine if descriptor_cosine is not None else descriptor_cosine_for(checkpoint)
    if cosine is None:
        cosine = min(base.cosine, chosen) if chosen is not None else base.cosine
    return replace(base, cosine=cosine, descriptor_cosine=chosen)


__all__ = ["DEFAULT_DESCRIPTOR_COSINE", "descriptor_cosine_for", "measured_descriptor_cosine", "rule_for"]

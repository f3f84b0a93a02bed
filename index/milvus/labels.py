"""Label counts of a Milvus collection without reading every item (the half of :class:`MilvusStore` that knows
which labels exist).

Milvus has no transaction in which a count could be kept with each insert, and no grouped count.  So the labels
ever added are recorded in a collection property of their own, ``simsearch.labels`` (a JSON list), extended
before the rows of an add that brings a new label are inserted (read afresh from the server, one thread of a
process at a time; a process remembers what it has seen, so an add of known labels costs nothing).  Recording
only saves :meth:`MilvusLabels.label_counts` a lookup: an add whose label could not be recorded goes on.  :meth:`MilvusLabels.label_counts` then
asks one ``count(*)`` per recorded label, plus one query for an item whose label is not recorded: two writers
that record different new labels at the same moment can overwrite each other's property, and a collection made
before the property existed has none; such a label is found there, recorded, and counted.

The trade-off: L + 2 round trips for L labels (each a server-side count over the label column, up to
``COUNT_THREADS`` at once, since each Strong read waits for a server time tick), against one pass that streams
every item's label to the client.  Measured on Milvus Lite with 60,000 items in 10 labels:
see ``bench/results/milvus_label_counts.json``.  A label whose items were all deleted stays recorded and costs
one query that counts 0 (it is left out of the answer).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from index.errors import IndexStoreError

logger = logging.getLogger(__name__)

LABELS_PROPERTY = "simsearch.labels"
MAX_DISCOVERED = 64  # unrecorded labels looked up one query each; beyond that, one pass over every label
COUNT_THREADS = 8  # label counts asked at once: each Strong read waits for a server time tick (~200 ms)


def label_literal(text: str) -> str:
    """A string literal for a Milvus boolean expression (JSON's escaping: quotes and backslashes)."""
    return json.dumps(text, ensure_ascii=False)


class MilvusLabels:
    """The label bookkeeping of :class:`index.milvus.MilvusStore` (a mixin: it works through the store's
    ``_run``, ``_client``, ``_location`` and ``_iterate``)."""

    _labels_seen: frozenset[str] | None = None  # recorded labels this process knows of (None: not read yet)
    _labels_lock = threading.Lock()  # one recording at a time in a process (Milvus Lite fails concurrent alters)

    def label_counts(self) -> dict[str, int]:
        """Live items per label, sorted by label: one count per recorded label (see the module docstring)."""
        known = self._recorded_labels()
        missing = self._unrecorded_labels(known)
        if missing is None:  # too many to look up one by one: count them all in one pass
            counts = self.scan_label_counts()
            self._record_labels(set(counts))
            return counts
        if missing:
            known = self._record_labels(missing)
        labels = sorted(known)
        if not labels:
            return {}
        with ThreadPoolExecutor(min(COUNT_THREADS, len(labels)), thread_name_prefix="simsearch-count") as pool:
            counts = dict(zip(labels, pool.map(self._count_label, labels)))
        return {label: n for label, n in counts.items() if n}

    def _count_label(self, label: str) -> int:
        rows = self._run("count a label", self._client.query, self._location.collection,
                         filter=f"label == {label_literal(label)}", output_fields=["count(*)"],
                         consistency_level="Strong")
        return int(rows[0]["count(*)"]) if rows else 0

    def scan_label_counts(self) -> dict[str, int]:
        """Items per label by one pass over every item's label (O(n) transferred; the fallback)."""
        counts = Counter(row["label"] for row in self._iterate(["label"]))
        return dict(sorted(counts.items()))

    def _note_labels(self, labels: list[str]) -> None:
        """Before inserting rows with ``labels``: record those this process has not seen recorded.  A failure
        is logged, not raised: :meth:`label_counts` finds an unrecorded label by itself."""
        if self._labels_seen is not None and set(labels) <= self._labels_seen:
            return
        try:
            with self._labels_lock:
                if self._labels_seen is None:
                    self._labels_seen = frozenset(self._recorded_labels())
                new = set(labels) - self._labels_seen
                if new:
                    self._record_labels(new)
        except IndexStoreError as exc:
            logger.warning("could not record the new labels of an add (label_counts finds them later): %s", exc)

    def _recorded_labels(self) -> set[str]:
        described = self._run("read the labels", self._client.describe_collection, self._location.collection)
        raw = (described.get("properties") or {}).get(LABELS_PROPERTY)
        return set(json.loads(raw)) if raw else set()

    def _record_labels(self, labels: set[str]) -> set[str]:
        """Add ``labels`` to the property (read afresh, so only a writer at the very same moment can lose
        one; :meth:`label_counts` finds such a label again).  Returns every recorded label."""
        known = self._recorded_labels()
        if not labels <= known:
            known |= labels
            self._run("record the labels", self._client.alter_collection_properties, self._location.collection,
                      properties={LABELS_PROPERTY: json.dumps(sorted(known), ensure_ascii=False)})
        self._labels_seen = frozenset(known)
        return known

    def _unrecorded_labels(self, known: set[str]) -> set[str] | None:
        """Labels carried by items but not recorded, one query per label found (None: more than
        ``MAX_DISCOVERED``)."""
        found: set[str] = set()
        while len(found) <= MAX_DISCOVERED:
            names = sorted(known | found)
            expression = f"label not in [{', '.join(map(label_literal, names))}]" if names else ""
            rows = self._run("look for unrecorded labels", self._client.query, self._location.collection,
                             filter=expression, output_fields=["label"], limit=1, consistency_level="Strong")
            if not rows:
                return found
            found.add(rows[0]["label"])
        return None

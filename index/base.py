"""The store interface: what the engine, the API, the CLI, the report and the notebook may ask of an index.

Two implementations: :class:`index.store.IndexStore` (SQLite in WAL mode holds the truth, FAISS is a view of
it; one machine, the default) and :class:`index.milvus.MilvusStore` (a Milvus server, cluster or Milvus Lite;
for collections and fleets of servers one machine cannot hold).  Both speak in ``(n, d) float32`` arrays,
int64 ids (never reused) and :class:`ItemMeta`, and both score a neighbour by the cosine of L2-normalised
vectors, ``similarity`` in [-1, 1] and ``score = (1 + similarity) / 2``.

Maintenance that only one back end has (a change log, snapshot files of the search index, compaction) is a
separate interface, :class:`Maintainable`, so that no store pretends to do what it does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from index.config import IndexConfig

# the longest label (in characters, after stripping surrounding whitespace) that the API accepts and a store
# filters on: the one limit, imported by the API and the stores (Milvus: 4 UTF-8 bytes each in the label field)
MAX_LABEL_CHARS = 100
# the label of an item that has none (an image of an unlabelled collection, an upload sent without a label): it
# takes no part in the vote, and a label filter never matches it
NO_LABEL = ""


@dataclass(frozen=True)
class ItemMeta:
    """What the store knows about one indexed item; ``added_at`` is a Unix time in seconds."""

    id: int
    path: str
    label: str
    added_at: float
    source: str | None = None


@dataclass(frozen=True)
class CompactResult:
    """What :meth:`Maintainable.compact` did: ``rebuilt`` (the search index from the truth) and why, the
    snapshot it wrote (generation and the log seq it covers), how many tombstones it dropped, and the bytes
    of disk space it gave back."""

    rebuilt: bool
    reason: str
    snapshot_gen: int
    snapshot_seq: int
    dropped_tombstones: int
    seconds: float
    reclaimed_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Neighbor:
    """One search hit: ``similarity`` is the cosine in [-1, 1], ``score = (1 + similarity) / 2`` in [0, 1]."""

    id: int
    similarity: float
    score: float
    label: str
    path: str
    source: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, item_id: int, similarity: float, meta: ItemMeta) -> "Neighbor":
        similarity = min(max(float(similarity), -1.0), 1.0)
        return cls(int(item_id), similarity, (1.0 + similarity) / 2.0, meta.label, meta.path, meta.source)


def check_labels(labels: list[str]) -> list[str]:
    """``labels`` as stored: each :data:`NO_LABEL` or a string of at most MAX_LABEL_CHARS characters (the API's
    limit too)."""
    for i, label in enumerate(labels):
        if len(label) > MAX_LABEL_CHARS:
            raise ValueError(f"labels[{i}] must be at most {MAX_LABEL_CHARS} characters, got {len(label)}: "
                             f"{label[:40]!r}{'...' if len(label) > 40 else ''}")
    return labels


def check_label_filter(label: str | None) -> str | None:
    """``label`` as a search filter: None (no filter) or a non-empty string of at most MAX_LABEL_CHARS."""
    if label is None:
        return None
    if not isinstance(label, str) or not label or len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"label filter must be a non-empty string of at most {MAX_LABEL_CHARS} characters")
    return label


@runtime_checkable
class VectorStore(Protocol):
    """An index of embeddings with their labels and image references.

    Writes are durable when they return and safe from any number of threads and processes at once; a
    write acknowledged through one process is seen by the next read through every other."""

    backend: str  # "faiss-sqlite" or "milvus"

    @property
    def location(self) -> str: ...  # what ``--index`` names: a directory or a milvus:// URI (no secret)
    @property
    def dim(self) -> int: ...
    @property
    def config(self) -> IndexConfig: ...
    @property
    def index_type(self) -> str | None: ...
    @property
    def factory(self) -> str | None: ...
    @property
    def model_info(self) -> dict: ...  # the model stamp: checkpoint sha256, dim, metric, preprocessing
    @property
    def descriptors(self): ...  # the second vector per item (index.descriptors.DescriptorSpace), or None
    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray, *, labels: list[str], paths: list[str],
            sources: list[str] | None = None, descriptors: np.ndarray | None = None) -> np.ndarray: ...
    def remove(self, ids) -> list[ItemMeta]: ...
    def search(self, xq: np.ndarray, k: int, *, ef_search: int | None = None, nprobe: int | None = None,
               label: str | None = None) -> list[list[Neighbor]]: ...
    def get(self, item_id: int) -> ItemMeta | None: ...
    def get_many(self, ids) -> dict[int, ItemMeta]: ...
    def label_counts(self) -> dict[str, int]: ...
    def random_ids(self, n: int, rng: np.random.Generator) -> np.ndarray: ...
    def iter_items(self) -> Iterator[ItemMeta]: ...
    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]: ...
    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...
    def vectors(self, ids) -> dict[int, np.ndarray]: ...  # the stored vectors of the live ids among ``ids``
    def reconstruct(self, item_id: int) -> np.ndarray: ...
    def stats(self) -> dict: ...
    def wait_for_background(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class Maintainable(Protocol):
    """A store that keeps its own change log and search-index files and is maintained by simsearch
    (:class:`index.store.IndexStore`).  A store that is not (Milvus keeps its own log and compacts its
    segments itself) has no log head, snapshot or compaction: callers check ``isinstance(store, Maintainable)``
    and report "not applicable"."""

    def log_head(self) -> int: ...  # the seq of the newest committed change
    def snapshot(self) -> int: ...  # write the search index as a snapshot file; returns its generation
    def compact(self, *, force: bool = False) -> CompactResult: ...  # a snapshot, rebuilt first when due
    def compaction_reason(self) -> str: ...  # why compact() would rebuild now; "" when it would not


@runtime_checkable
class ServerCompacted(Protocol):
    """A store whose server compacts its own storage in the background (Milvus: merges segments and purges
    deleted rows); one may only ask it to start now."""

    def request_compaction(self) -> str: ...  # what the server was asked to do, in words


@dataclass(frozen=True)
class ReplicaState:
    """What makes a store a *replica*: it holds the items of the store at ``location`` (the same ids, labels,
    paths and times, embedded by its own model) up to that store's log position ``seq`` (None: not known yet,
    or a source without a log).  A replica takes no ordinary writes (:class:`index.errors.IndexSupersededError`):
    only :meth:`Replicable.replicate` changes it, so no id can be taken twice."""

    location: str
    seq: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "ReplicaState | None":
        return None if not data else cls(str(data["location"]), None if data.get("seq") is None else int(data["seq"]))


@dataclass(frozen=True)
class LogTail:
    """A source's changes after some log position, for a replica to apply: the ids added since and still alive
    (``added``, with their metadata, in id order), the ids deleted since (``deleted``), and the ``head`` they
    lead up to."""

    head: int
    added: list[ItemMeta]
    deleted: list[int]


@runtime_checkable
class Replicable(Protocol):
    """A store that can be the replica of another, for re-embedding an index behind a live server and switching
    an alias to it (see :mod:`engine.lifecycle`).  Both stores implement it."""

    def replica_state(self) -> ReplicaState | None: ...
    def set_replica_state(self, state: ReplicaState | None) -> None: ...  # durable when it returns

    def replicate(self, vectors: np.ndarray, items: list[ItemMeta], *, deleted=(),
                  state: ReplicaState | None = None, descriptors: np.ndarray | None = None) -> tuple[int, int]:
        """Add ``items`` with their own ids (ids already present are skipped) and ``vectors: (n, d) float32``
        (and ``descriptors``, for a store that keeps a second vector per item), delete the ids ``deleted``, and
        record ``state`` if given: one durable step, allowed on a replica.  Returns (added, deleted)."""
        ...

    def log_tail(self, seq: int) -> LogTail | None: ...  # None: no log, or pruned past ``seq`` (diff the ids)
    def live_ids(self) -> np.ndarray: ...  # every live id, ``(n,) int64`` sorted

"""Typed, frozen configuration of an index, and the rule that resolves ``index_type="auto"``.

The ``auto`` rule (:func:`choose_index_type`), for ``n`` vectors of dimension ``d``:

1. ``n < flat_max_vectors`` (default 200k) -> ``"flat"``: exact search, and brute force over 200k x 128-d
   still answers a query in a few milliseconds.
2. otherwise, if the estimated HNSW footprint (:func:`estimate_hnsw_bytes`, raw float32 vectors plus the
   graph links plus the id map) fits ``memory_budget_bytes`` -> ``"hnsw"``: approximate, high recall, fast.
3. otherwise -> ``"ivfpq"``: compressed codes of ``pq_m * pq_nbits / 8`` bytes per vector, lower recall.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

INDEX_TYPES = ("flat", "hnsw", "ivfpq", "auto")
METRICS = ("ip",)


@dataclass(frozen=True)
class IndexConfig:
    """How an index is built and searched.

    metric ``"ip"`` is the inner product; with ``normalize=True`` every added and query vector is
    L2-normalised first, so the inner product is the cosine similarity.
    ``ivf_nlist=None`` / ``pq_m=None`` are derived from the collection size / dimension
    (:func:`auto_nlist`, :func:`auto_pq_m`).  ``expected_size`` lets ``"auto"`` resolve before the first
    ``add``; without it the first added batch decides.  Searches of fewer than ``parallel_min_queries``
    queries run in one OpenMP thread: a single query gains nothing from a thread team, and on a loaded
    machine the team's barrier costs milliseconds (measured: HNSW single-query 8400 -> 124 QPS with 2
    threads on 2 busy cores).

    ``exact_filter_max``: a label filter matching at most this many live items is answered by brute force
    over that class's vectors (exact, always ``k`` hits), not by a filtered graph walk, which on HNSW
    returns fewer than ``k`` hits for a rare class (measured: a 0.5% class, k=10, ef 64: 4.4 hits on
    average).  20,000 vectors of 128-d are 10 MB (Qdrant's default full-scan threshold), one query over them
    0.4 ms on one core.  ``background_rebuild_max_vectors``: the automatic snapshot policy rebuilds a view
    that is due for compaction only up to this many stored vectors (0: never; ``simsearch index compact``
    does it, e.g. from a timer).
    """

    index_type: str = "auto"
    metric: str = "ip"
    normalize: bool = True
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    ivf_nlist: int | None = None
    pq_m: int | None = None
    pq_nbits: int = 8
    nprobe: int = 16
    train_sample: int = 100_000
    memory_budget_bytes: int = 4 * 2**30
    flat_max_vectors: int = 200_000
    expected_size: int | None = None
    compact_fraction: float = 0.2
    parallel_min_queries: int = 16
    exact_filter_max: int = 20_000
    background_rebuild_max_vectors: int = 0
    seed: int = 0
    auto_snapshot: bool = True
    snapshot_every: int = 10_000
    snapshot_interval_s: float = 600.0

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {self.index_type!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "pq_nbits", "nprobe", "train_sample",
                     "memory_budget_bytes", "flat_max_vectors", "parallel_min_queries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("ivf_nlist", "pq_m", "expected_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        for name in ("exact_filter_max", "background_rebuild_max_vectors"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if not isinstance(self.snapshot_every, int) or self.snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive int, got {self.snapshot_every!r}")
        if not self.snapshot_interval_s > 0:
            raise ValueError(f"snapshot_interval_s must be positive, got {self.snapshot_interval_s!r}")
        if not 0.0 < self.compact_fraction <= 1.0:
            raise ValueError(f"compact_fraction must be in (0, 1], got {self.compact_fraction!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "IndexConfig":
        """The config saved by :meth:`to_dict` (also by older simsearch: renamed fields are read under their
        old names, unknown ones are ignored)."""
        data = {_RENAMED.get(k, k): v for k, v in data.items()}
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# fields saved under another name by index format version 2 (the FAISS snapshot was called a checkpoint)
_RENAMED = {"auto_checkpoint": "auto_snapshot", "checkpoint_every": "snapshot_every",
            "checkpoint_interval_s": "snapshot_interval_s"}


def estimate_hnsw_bytes(n: int, dim: int, hnsw_m: int) -> int:
    """Approximate RAM of ``IDMap2,HNSW{m},Flat`` holding ``n`` vectors: vectors + links (~2m level-0 +
    ~m/(m-1)*m upper levels, int32) + levels + the id map and its reverse map."""
    links = 4 * (2 * hnsw_m + hnsw_m)
    return int(n * (4 * dim + links + 4 + 8 + 40))


def choose_index_type(n: int, dim: int, config: IndexConfig) -> str:
    """Resolve ``config.index_type`` for a collection of ``n`` vectors (see the module docstring)."""
    if config.index_type != "auto":
        return config.index_type
    if n < config.flat_max_vectors:
        return "flat"
    if estimate_hnsw_bytes(n, dim, config.hnsw_m) <= config.memory_budget_bytes:
        return "hnsw"
    return "ivfpq"


def auto_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` vectors: ``4 * sqrt(n)`` rounded to a power of two, in [16, 65536],
    and at most ``n // 39`` so k-means has ~39 training points per centroid."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 1)))
    nlist = min(nlist, max(n // 39, 1))
    return int(min(max(nlist, 16), 65536))


def auto_pq_m(dim: int) -> int:
    """Number of PQ sub-quantizers: the largest divisor of ``dim`` not above ``dim // 4`` (4 dims each)."""
    for m in range(max(dim // 4, 1), 0, -1):
        if dim % m == 0:
            return m
    return 1

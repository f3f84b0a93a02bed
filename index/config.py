"""Typed, frozen configuration of an index, and the rule that resolves ``index_type="auto"``.

The ``auto`` rule (:func:`choose_index_type`), for ``n`` vectors of dimension ``d``, never picks a setting
whose measured recall@10 is below ``recall_floor`` (0.95): the recall table (:mod:`index.recall_table`,
written by ``python -m bench.scale``) says what each setting reached at each size, and how fast it was.

1. ``n < flat_max_vectors`` (default 20k) -> ``"flat"``: exact, and brute force over 20k x 128-d answers a
   query in well under a millisecond.
2. otherwise, among ``"hnsw"`` and ``"ivfpq"`` (IVF-PQ codes in RAM, re-ranked exactly from the truth), the
   fastest whose measured recall@10 at this size, with this config's search settings, reaches
   ``recall_floor`` and whose estimated footprint (:func:`estimate_bytes`) fits ``memory_budget_bytes``.
3. when neither qualifies (not measured at this size, or below the floor): ``"flat"`` if it fits the memory
   budget (exact, slower), else ``"ivfpq"`` (the only case below the floor: nothing exact fits the budget);
   both are logged as warnings, and ``IndexStore.stats`` shows the expected recall, never a silent choice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

from index import recall_table

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivfpq", "auto")
METRICS = ("ip",)
RERANK_DEFAULT = 200  # candidates re-ranked exactly: recall@10 >= 0.95 on the real embeddings (docs/benchmarks.md)


@dataclass(frozen=True)
class IndexConfig:
    """How an index is built and searched.

    metric ``"ip"`` is the inner product; with ``normalize=True`` every added and query vector is
    L2-normalised first, so the inner product is the cosine similarity.
    ``ivf_nlist=None`` / ``pq_m=None`` are derived from the collection size / dimension
    (:func:`auto_nlist`, :func:`auto_pq_m`).  ``rerank``: an ``ivfpq`` search takes this many candidates from
    the compressed codes and re-ranks them by their exact vectors read from SQLite (0: no re-ranking; the
    scores are then approximate).  ``recall_floor``: the least measured recall@10 that ``"auto"`` accepts.
    ``expected_size`` lets ``"auto"`` resolve before the first ``add``; without it the first added batch
    decides.  Searches of fewer than ``parallel_min_queries`` queries (and adds of fewer vectors) run in one
    OpenMP thread: a single query gains nothing from a thread team, and on a loaded machine the team's
    barrier costs milliseconds (measured: HNSW single-query 8400 -> 124 QPS with 2 threads on 2 busy cores).

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
    rerank: int = RERANK_DEFAULT
    train_sample: int = 100_000
    memory_budget_bytes: int = 4 * 2**30
    flat_max_vectors: int = 20_000
    recall_floor: float = 0.95
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
        if not isinstance(self.rerank, int) or isinstance(self.rerank, bool) or self.rerank < 0:
            raise ValueError(f"rerank must be an int >= 0, got {self.rerank!r}")
        if not 0.0 <= self.recall_floor <= 1.0:
            raise ValueError(f"recall_floor must be in [0, 1], got {self.recall_floor!r}")
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


def estimate_bytes(index_type: str, n: int, dim: int, config: IndexConfig) -> int:
    """Approximate RAM of a resolved ``index_type`` holding ``n`` vectors of dimension ``dim``."""
    if index_type == "flat":  # vectors + the IDMap2 id map and its reverse hash map
        return int(n * (4 * dim + 8 + 40))
    if index_type == "hnsw":
        return estimate_hnsw_bytes(n, dim, config.hnsw_m)
    if index_type == "ivfpq":  # codes + ids in the inverted lists, and the HNSW coarse quantizer's centroids
        nlist = config.ivf_nlist or auto_nlist(n)
        code = (config.pq_m or auto_pq_m(dim)) * config.pq_nbits // 8
        return int(n * (code + 8) + estimate_hnsw_bytes(nlist, dim, config.hnsw_m))
    raise ValueError(f"no size estimate for index_type {index_type!r}")


def setting_params(index_type: str, dim: int, config: IndexConfig) -> dict:
    """The parameters of ``config`` that decide the recall of a resolved ``index_type``: the key under which
    the recall table stores a setting's measurements (``ivf_nlist`` is not in it: the table measures the
    :func:`auto_nlist` rule)."""
    if index_type == "flat":
        return {}
    if index_type == "hnsw":
        return {"hnsw_m": config.hnsw_m, "ef_construction": config.ef_construction, "ef_search": config.ef_search}
    if index_type == "ivfpq":
        return {"code": f"PQ{config.pq_m or auto_pq_m(dim)}x{config.pq_nbits}", "nprobe": config.nprobe,
                "rerank": config.rerank}
    raise ValueError(f"no setting for index_type {index_type!r}")


def expected_quality(index_type: str, n: int, dim: int, config: IndexConfig) -> recall_table.Expectation | None:
    """What the recall table says ``index_type`` with ``config``'s settings reaches at ``n`` vectors (exact
    Flat: recall 1 by construction), or None when that setting was not measured near this size."""
    found = recall_table.expected(index_type, setting_params(index_type, dim, config), n)
    if index_type == "flat":
        return found or recall_table.Expectation.exact(n)
    return found


def choose_index_type(n: int, dim: int, config: IndexConfig) -> str:
    """Resolve ``config.index_type`` for a collection of ``n`` vectors (see the module docstring)."""
    if config.index_type != "auto":
        return config.index_type
    if n < config.flat_max_vectors:
        return "flat"
    fits = {t: estimate_bytes(t, n, dim, config) <= config.memory_budget_bytes for t in ("flat", "hnsw", "ivfpq")}
    options = []
    for index_type in ("hnsw", "ivfpq"):
        quality = expected_quality(index_type, n, dim, config)
        if quality is not None and quality.recall_at_10 >= config.recall_floor and fits[index_type]:
            options.append((quality.p50_ms if quality.p50_ms is not None else math.inf, index_type))
    if options:
        return min(options)[1]
    if fits["flat"]:
        logger.warning("auto index type for %d vectors: no approximate setting measured at recall@10 >= %.2f "
                       "fits the memory budget of %.1f GiB; using exact flat (slower). Measure this size with: "
                       "python -m bench.scale --n %d --table", n, config.recall_floor,
                       config.memory_budget_bytes / 2**30, n)
        return "flat"
    quality = expected_quality("ivfpq", n, dim, config)
    measured = "not measured near this size" if quality is None else f"measured {quality.recall_at_10:.3f}"
    logger.warning("auto index type for %d vectors: only ivfpq fits the memory budget of %.1f GiB, and its "
                   "recall@10 with nprobe=%d, rerank=%d was %s; raise the budget, nprobe or rerank, or measure "
                   "this size with: python -m bench.scale --n %d --table", n, config.memory_budget_bytes / 2**30,
                   config.nprobe, config.rerank, measured, n)
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

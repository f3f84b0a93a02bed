"""Building, training and querying the faiss index behind an :class:`~index.store.IndexStore`.

Layouts (all with ``METRIC_INNER_PRODUCT`` and caller-chosen int64 ids):

* ``flat``  -> ``"IDMap2,Flat"``: exact; ``remove_ids`` supported; vectors reconstructible.
* ``hnsw``  -> ``"IDMap2,HNSW{m},Flat"``: faiss HNSW cannot remove, so deletions are tombstones
  filtered with an ``IDSelector`` at search time (see ``IndexStore.remove`` / ``compact``).
* ``ivfpq`` -> ``"IVF{nlist}_HNSW{m},PQ{pq_m}x{nbits}"``: product-quantised codes in inverted lists, an
  HNSW graph over the ``nlist`` centroids as coarse quantizer; trained on a sample of the truth.  Its
  candidates are re-ranked with the exact vectors by the store (:mod:`index.rerank`).  Indexes made before
  the HNSW quantizer (``"IVF{nlist},PQ{m}x{nbits}"``) still open, and are re-ranked too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

from index.config import IndexConfig, auto_nlist, auto_pq_m

logger = logging.getLogger(__name__)

# k-means iterations of each PQ sub-quantizer (faiss: 25): on the 60k real embeddings, 10 train in half the
# time with the same recall after re-ranking (0.974 against 0.971 at rerank 200, docs/benchmarks.md)
PQ_TRAIN_ITERATIONS = 10


def factory_string(index_type: str, dim: int, config: IndexConfig, n: int) -> str:
    """The ``faiss.index_factory`` string for a resolved ``index_type`` and ``n`` expected vectors."""
    if index_type == "flat":
        return "IDMap2,Flat"
    if index_type == "hnsw":
        return f"IDMap2,HNSW{config.hnsw_m},Flat"
    if index_type == "ivfpq":
        nlist = config.ivf_nlist or auto_nlist(n)
        pq_m = config.pq_m or auto_pq_m(dim)
        if dim % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the embedding dimension {dim}")
        return f"IVF{nlist}_HNSW{config.hnsw_m},PQ{pq_m}x{config.pq_nbits}"
    raise ValueError(f"cannot build index_type {index_type!r}; resolve 'auto' first")


def index_type_of(factory: str | None) -> str | None:
    """The ``index_type`` a :func:`factory_string` was made for (None for None)."""
    if factory is None:
        return None
    if factory.startswith("IVF"):
        return "ivfpq"
    return "hnsw" if "HNSW" in factory else "flat"


def new_index(factory: str, dim: int, config: IndexConfig) -> faiss.Index:
    """An empty faiss index for ``factory`` with the construction parameters of ``config`` applied."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    hnsw = hnsw_of(index)
    if hnsw is not None:
        hnsw.hnsw.efConstruction = config.ef_construction
        hnsw.hnsw.efSearch = config.ef_search
    ivf = ivf_of(index)
    if ivf is not None:
        set_nprobe(ivf, config.nprobe)
        if isinstance(ivf, faiss.IndexIVFPQ):
            ivf.do_polysemous_training = False  # unused by our search and ~8x the training time
            ivf.pq.cp.niter = PQ_TRAIN_ITERATIONS
    return index


def set_nprobe(ivf: faiss.IndexIVF, nprobe: int) -> None:
    """Search ``nprobe`` lists; an HNSW coarse quantizer then explores at least ``2 * nprobe`` candidates (its
    own ``efSearch``), so that it finds the ``nprobe`` nearest centroids."""
    ivf.nprobe = nprobe
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = max(quantizer.hnsw.efSearch, 2 * nprobe, 64)


def hnsw_of(index: faiss.Index) -> faiss.IndexHNSW | None:
    """The ``IndexHNSW`` inside ``index`` (an ``IndexIDMap2`` wrapper or itself), or None."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The ``IndexIVF`` inside ``index``, or None."""
    try:
        return faiss.downcast_index(faiss.extract_index_ivf(index))  # the concrete class (IndexIVFPQ...)
    except RuntimeError:
        return None


MIN_POINTS_PER_CENTROID = 39  # faiss's k-means warns below this many training points per centroid


def index_bytes(index: faiss.Index) -> int:
    """Resident bytes of the data inside ``index`` (vectors or codes, ids, graph links, centroids), from its
    structure: the IDMap2 reverse map is counted at 40 bytes an entry (a hash-map node), allocator slack not."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap2):
        return index_bytes(index.index) + 48 * int(index.ntotal)
    if isinstance(index, faiss.IndexPreTransform):
        return index_bytes(index.index) + 4 * index.d * index.d * index.chain.size()
    if isinstance(index, faiss.IndexHNSW):
        hnsw = index.hnsw
        return (index_bytes(index.storage) + 4 * hnsw.neighbors.size() + 4 * hnsw.levels.size()
                + 8 * hnsw.offsets.size())
    if isinstance(index, faiss.IndexIVF):
        return (int(index.ntotal) * (index.code_size + 8) + index_bytes(index.quantizer)
                + (4 * index.pq.M * index.pq.ksub * index.pq.dsub if isinstance(index, faiss.IndexIVFPQ) else 0))
    if isinstance(index, faiss.IndexFlatCodes):
        return int(index.ntotal) * index.code_size
    return 0


def training_need(index: faiss.Index, config: IndexConfig) -> int:
    """How many vectors ``index`` needs before it can be trained (0 when it needs no training)."""
    if index.is_trained:
        return 0
    ivf = ivf_of(index)
    return max(256 if config.pq_nbits >= 8 else 2**config.pq_nbits, ivf.nlist if ivf is not None else 1)


def train_if_needed(index: faiss.Index, xb: np.ndarray, config: IndexConfig) -> int:
    """Train ``index`` on ``xb: (n, d) float32``, or on a seeded sample of it; returns how many vectors it was
    trained on (0 if it needed no training).  The sample holds at least ``MIN_POINTS_PER_CENTROID`` points per
    IVF list (raised above ``config.train_sample`` when ``nlist`` needs it)."""
    need = training_need(index, config)
    if not need:
        return 0
    if len(xb) < need:
        raise ValueError(
            f"an IVF-PQ index needs at least {need} vectors to train, got {len(xb)}; "
            "add a larger first batch or use index_type='flat'/'hnsw'"
        )
    sample = training_size(index, config)
    if len(xb) > sample:
        xb = xb[sample_positions(len(xb), sample, config.seed)]
    logger.info("training %s on %d vectors", type(index).__name__, len(xb))
    with omp_threads(faiss.omp_get_max_threads()):
        index.train(np.ascontiguousarray(xb))
    return len(xb)


def training_size(index: faiss.Index, config: IndexConfig) -> int:
    """How many vectors ``index`` is trained on, at most (0 when it needs no training): ``config.train_sample``,
    raised to ``MIN_POINTS_PER_CENTROID`` per IVF list when ``nlist`` needs more."""
    if index.is_trained:
        return 0
    ivf = ivf_of(index)
    return max(config.train_sample, MIN_POINTS_PER_CENTROID * (ivf.nlist if ivf is not None else 1))


def sample_positions(n: int, size: int, seed: int) -> np.ndarray:
    """The seeded training sample: ``min(size, n)`` sorted positions in ``range(n)`` (the same on the same data,
    so that processes that train alone train alike)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def search_params(index: faiss.Index, *, ef_search: int, nprobe: int,
                  selector: faiss.IDSelector | None) -> faiss.SearchParameters | None:
    """Per-call search parameters (never shared between threads: ``IndexIDMap2`` mutates them in place)."""
    if hnsw_of(index) is not None:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef_search
    elif ivf_of(index) is not None:
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
    elif selector is not None:
        params = faiss.SearchParameters()
    else:
        return None
    if selector is not None:
        params.sel = selector
    return params


def stored_ids(index: faiss.Index) -> np.ndarray:
    """All ids stored in an ``IndexIDMap2`` index, ``(ntotal,) int64`` in storage order."""
    if not isinstance(index, faiss.IndexIDMap2):
        raise ValueError("stored ids are only listed for IDMap2 (flat / hnsw) indexes")
    return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """All vectors of an ``IndexIDMap2`` index, ``(ntotal, d) float32`` in the order of :func:`stored_ids`."""
    if not isinstance(index, faiss.IndexIDMap2):
        raise ValueError("vectors are only reconstructible from flat / hnsw indexes (IVF-PQ stores codes)")
    inner = faiss.downcast_index(index.index)
    if inner.ntotal == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    return _numpy_method(inner, "reconstruct_n")(0, inner.ntotal)


def reconstruct(index: faiss.Index, item_id: int) -> np.ndarray:
    """One stored vector, ``(d,) float32``."""
    return _numpy_method(index, "reconstruct")(item_id)


def _numpy_method(index: faiss.Index, name: str):
    """The numpy version of a faiss method. ``faiss.contrib.torch_utils`` (imported by
    pytorch-metric-learning) replaces ``search``, ``reconstruct``, ``reconstruct_n``... with versions that
    return torch tensors or drop arguments; it keeps the originals as ``<name>_numpy``."""
    return getattr(index, f"{name}_numpy", None) or getattr(index, name)


def search(index: faiss.Index, xq: np.ndarray, k: int, params: faiss.SearchParameters | None = None):
    """``index.search`` with per-call parameters, also after ``faiss.contrib.torch_utils`` (imported by
    pytorch-metric-learning) has replaced ``search`` with a version that drops ``params``.
    Returns (D: (nq, k) float32, I: (nq, k) int64)."""
    return _numpy_method(index, "search")(xq, k, params=params)


@contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """Run faiss in ``n`` OpenMP threads inside the block, for the calling thread only (OpenMP's thread
    count is a per-thread setting), restoring the previous value afterwards."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)

"""The index of embeddings behind one interface (:class:`VectorStore`): by default SQLite (WAL) holds the
truth and a FAISS index per process is a view of it (:class:`IndexStore`); for scale-out, a Milvus collection
(:mod:`index.milvus`, imported on demand: ``pymilvus`` is an optional extra).

Knows nothing of torch or Flask: it takes ``(n, d) float32`` arrays, ids and metadata.
"""

from index.config import INDEX_TYPES, IndexConfig, auto_nlist, auto_pq_m, choose_index_type, estimate_hnsw_bytes
from index.errors import (IndexBusyError, IndexDamagedError, IndexFullError, IndexMismatchError, IndexReadOnlyError,
                          IndexStoreError, IndexSupersededError, IndexUnavailableError, storage_error)
from index.persist import MODEL_FIELDS
from index.base import (MAX_LABEL_CHARS, NO_LABEL, CompactResult, ItemMeta, Maintainable, Neighbor, ReplicaState,
                        Replicable, ServerCompacted, VectorStore)
from index.store import IndexStore
from index.vote import Vote, majority_vote

__all__ = [
    "INDEX_TYPES", "CompactResult", "IndexBusyError", "IndexConfig", "IndexDamagedError", "IndexFullError",
    "IndexMismatchError", "IndexReadOnlyError", "IndexStore", "IndexStoreError", "IndexSupersededError",
    "IndexUnavailableError", "ItemMeta",
    "MAX_LABEL_CHARS", "MODEL_FIELDS", "NO_LABEL", "Maintainable",
    "Neighbor", "ReplicaState", "Replicable", "ServerCompacted", "VectorStore", "Vote", "auto_nlist", "auto_pq_m",
    "choose_index_type", "estimate_hnsw_bytes", "majority_vote", "storage_error",
]

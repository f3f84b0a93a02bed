"""The index of embeddings: SQLite (WAL) holds the truth, a FAISS index per process is a view of it.

Knows nothing of torch or Flask: it takes ``(n, d) float32`` arrays, ids and metadata.
"""

from index.config import INDEX_TYPES, IndexConfig, auto_nlist, auto_pq_m, choose_index_type, estimate_hnsw_bytes
from index.db import ItemMeta
from index.errors import IndexBusyError, IndexMismatchError, IndexStoreError
from index.persist import MODEL_FIELDS
from index.keeper import CompactResult
from index.store import IndexStore, Neighbor
from index.vote import Vote, majority_vote

__all__ = [
    "INDEX_TYPES", "CompactResult", "IndexBusyError", "IndexConfig", "IndexMismatchError", "IndexStore",
    "IndexStoreError", "ItemMeta", "MODEL_FIELDS", "Neighbor", "Vote", "auto_nlist", "auto_pq_m",
    "choose_index_type", "estimate_hnsw_bytes", "majority_vote",
]

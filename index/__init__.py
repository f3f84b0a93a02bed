"""FAISS index of float32 embeddings with SQLite metadata, crash-safe persistence and majority voting.

Knows nothing of torch or Flask: it takes ``(n, d) float32`` arrays, ids and metadata.
"""

from index.config import IndexConfig, auto_nlist, auto_pq_m, choose_index_type, estimate_hnsw_bytes
from index.errors import IndexMismatchError, IndexStoreError
from index.metadata import ItemMeta
from index.persist import MODEL_FIELDS
from index.store import IndexStore, Neighbor
from index.vote import Vote, majority_vote

__all__ = [
    "IndexConfig", "IndexMismatchError", "IndexStore", "IndexStoreError", "ItemMeta", "MODEL_FIELDS",
    "Neighbor", "Vote", "auto_nlist", "auto_pq_m", "choose_index_type", "estimate_hnsw_bytes", "majority_vote",
]

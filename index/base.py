"""The store interface: what the engine, the API, the CLI, the report and the notebook may ask of an index.

Two implementations: :class:`index.store.IndexStore` (SQLite in WAL mode holds the truth, FAISS is a view of
it; one machine, the default) and :class:`index.milvus.MilvusStore` (a Milvus server, cluster or Milvus Lite;
for collections and fleets of servers one machine cannot hold).  Both speak in ``(n, d) float32`` arrays,
int64 ids (never reused) and :class:`ItemMeta`, and both score a neighbour by the cosine of L2-normalised
vectors, ``similarity`` in [-1, 1] and ``score = (1 + similarity) / 2``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from index.config import IndexConfig
from index.db import ItemMeta

MAX_LABEL_CHARS = 512  # the longest label a store accepts (Milvus: the VARCHAR length of the label field)


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
    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray, *, labels: list[str], paths: list[str],
            sources: list[str] | None = None) -> np.ndarray: ...
    def remove(self, ids) -> list[ItemMeta]: ...
    def search(self, xq: np.ndarray, k: int, *, ef_search: int | None = None, nprobe: int | None = None,
               label: str | None = None, fresh: bool = True) -> list[list[Neighbor]]: ...
    # fresh=False: the caller accepts missing writes of the last moments (Milvus: Bounded instead of Strong
    # consistency, a server time tick saved); the embedded store is always fresh
    def get(self, item_id: int) -> ItemMeta | None: ...
    def get_many(self, ids) -> dict[int, ItemMeta]: ...
    def label_counts(self) -> dict[str, int]: ...
    def random_ids(self, n: int, rng: np.random.Generator) -> np.ndarray: ...
    def iter_items(self) -> Iterator[ItemMeta]: ...
    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]: ...
    def reconstruct(self, item_id: int) -> np.ndarray: ...
    def stats(self) -> dict: ...
    def log_head(self) -> int | None: ...
    def checkpoint(self) -> int | None: ...
    def compact(self, *, force: bool = False): ...
    def wait_for_background(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...

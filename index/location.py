"""``--index`` names a store: an embedded index directory (the default) or a Milvus collection.

* ``DIR``: :class:`index.store.IndexStore` (SQLite WAL + FAISS views), created in ``DIR``;
* ``milvus://HOST:PORT/COLLECTION`` / ``milvus+tls://...``, or a Milvus Lite data directory ``PATH.db``:
  :class:`index.milvus.MilvusStore` (``pymilvus`` is imported only then).

Every store has a *home*: the folder holding ``model.pt`` and uploaded images.  For a directory it is the
directory itself; for Milvus it is stored with the collection (a folder every API server reaches).
"""

from __future__ import annotations

import os

from index.base import VectorStore
from index.config import IndexConfig
from index.milvus import LITE_SUFFIX, MilvusLocation, parse_location
from index.store import IndexStore

DEFAULT_HOME_ROOT = os.path.join("runs", "milvus")


def is_milvus(location: str | os.PathLike) -> bool:
    return parse_location(os.fspath(location)) is not None


def is_milvus_lite(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a Milvus Lite data directory (one process may open it at a time)."""
    parsed = parse_location(os.fspath(location))
    return parsed is not None and parsed.lite


def default_home(location: str | os.PathLike) -> str:
    """Where ``model.pt`` and uploads go when the user names no home: the directory itself, ``PATH-files``
    beside a Milvus Lite ``PATH.db``, or ``./runs/milvus/COLLECTION`` for a Milvus server."""
    parsed = parse_location(os.fspath(location))
    if parsed is None:
        return os.path.abspath(os.fspath(location))
    if parsed.lite:
        return parsed.uri[: -len(LITE_SUFFIX)] + "-files"
    return os.path.abspath(os.path.join(DEFAULT_HOME_ROOT, parsed.collection))


def open_store(location: str | os.PathLike, *, expect_model: dict | None = None) -> VectorStore:
    """Open the store ``location`` names (see the module docstring)."""
    parsed = parse_location(os.fspath(location))
    if parsed is None:
        return IndexStore.open(os.fspath(location), expect_model=expect_model)
    from index.milvus import MilvusStore

    return MilvusStore.open(parsed, expect_model=expect_model)


def create_store(location: str | os.PathLike, dim: int, *, config: IndexConfig, model_info: dict,
                 home: str | None = None) -> VectorStore:
    """Create an empty store at ``location``; ``home`` (Milvus only) defaults to :func:`default_home`."""
    parsed = parse_location(os.fspath(location))
    if parsed is None:
        if home is not None and os.path.abspath(home) != os.path.abspath(os.fspath(location)):
            raise ValueError("an index directory is its own home: --home applies to Milvus indexes only")
        return IndexStore.create(os.fspath(location), dim, config=config, model_info=model_info)
    from index.milvus import MilvusStore

    return MilvusStore.create(parsed, dim, config=config, model_info=model_info,
                              home=home or default_home(location))


def milvus_location(location: str | os.PathLike) -> MilvusLocation | None:
    return parse_location(os.fspath(location))

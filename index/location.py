"""``--index`` names a store: an embedded index directory (the default) or a Milvus collection.

* ``DIR``: :class:`index.store.IndexStore` (SQLite WAL + FAISS views), created in ``DIR``;
* ``milvus://HOST:PORT/COLLECTION`` / ``milvus+tls://...``, or a Milvus Lite data directory ``PATH.db``:
  :class:`index.milvus.MilvusStore` (``pymilvus`` is imported only then).

Parsing a location lives here; the Milvus store itself is in :mod:`index.milvus`.

Every store has a *home*: the folder holding ``model.pt`` and uploaded images.  For a directory it is the
directory itself; for Milvus it is stored with the collection (a folder every API server reaches).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from index.base import VectorStore
from index.config import IndexConfig
from index.errors import IndexStoreError
from index.store import IndexStore

DEFAULT_HOME_ROOT = os.path.join("runs", "milvus")
TOKEN_ENV = "SIMSEARCH_MILVUS_TOKEN"  # the Milvus token: never part of a location
SCHEMES = {"milvus": "http", "milvus+tls": "https"}
DEFAULT_PORT = 19530
LITE_SUFFIX = ".db"
LITE_COLLECTION = "simsearch"
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


@dataclass(frozen=True)
class MilvusLocation:
    """Where a Milvus collection lives: ``uri`` is ``http(s)://host:port`` or a Milvus Lite data directory."""

    uri: str
    collection: str
    lite: bool = False

    @property
    def display(self) -> str:
        """The location as a user writes it (``--index``); holds no secret."""
        if self.lite:
            return self.uri
        scheme = "milvus+tls" if self.uri.startswith("https://") else "milvus"
        return f"{scheme}://{self.uri.split('://', 1)[1]}/{self.collection}"


def parse_location(text: str) -> MilvusLocation | None:
    """The Milvus location ``text`` names, or None when it names an embedded index directory.

    ``milvus://HOST[:PORT]/COLLECTION`` (port 19530 by default), ``milvus+tls://...``, or a Milvus Lite data
    directory ``PATH.db`` (collection ``simsearch``).  Raises ``IndexStoreError`` for a malformed URI,
    and for one carrying credentials (the token belongs in ``$SIMSEARCH_MILVUS_TOKEN``, never in a command
    line or a log)."""
    text = os.fspath(text)
    scheme, sep, rest = text.partition("://")
    if sep and scheme in SCHEMES:
        if "@" in rest.split("/", 1)[0]:
            raise IndexStoreError(f"put Milvus credentials in ${TOKEN_ENV}, not in the index URI")
        hostport, _, collection = rest.partition("/")
        collection = collection.strip("/")
        host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", str(DEFAULT_PORT))
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise IndexStoreError(f"bad Milvus URI {text!r}: expected {scheme}://HOST:PORT/COLLECTION")
        if not _COLLECTION_NAME.match(collection):
            raise IndexStoreError(f"bad Milvus collection name {collection!r} in {text!r}: letters, digits and "
                                  "underscores, starting with a letter or underscore")
        return MilvusLocation(f"{SCHEMES[scheme]}://{host}:{int(port)}", collection)
    if sep:
        if scheme in ("http", "https", "tcp", "grpc"):
            raise IndexStoreError(f"write a Milvus server as milvus://HOST:PORT/COLLECTION, not {text!r}")
        return None
    if text.rstrip("/").endswith(LITE_SUFFIX):
        return MilvusLocation(os.path.abspath(text.rstrip("/")), LITE_COLLECTION, lite=True)
    return None


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
    """Open the store ``location`` names (see the module docstring); an alias (:mod:`index.alias`) opens the
    index it names now."""
    from index.alias import resolve

    location = resolve(location)
    parsed = parse_location(os.fspath(location))
    if parsed is None:
        return IndexStore.open(os.fspath(location), expect_model=expect_model)
    from index.milvus.store import MilvusStore

    return MilvusStore.open(parsed, expect_model=expect_model)


def create_store(location: str | os.PathLike, dim: int, *, config: IndexConfig, model_info: dict,
                 home: str | None = None, descriptor_model: dict | None = None) -> VectorStore:
    """Create an empty store at ``location``; ``home`` (Milvus only) defaults to :func:`default_home`;
    ``descriptor_model``: a second vector per item (an index directory only, see :mod:`index.descriptors`)."""
    parsed = parse_location(os.fspath(location))
    if parsed is None:
        if home is not None and os.path.abspath(home) != os.path.abspath(os.fspath(location)):
            raise ValueError("an index directory is its own home: --home applies to Milvus indexes only")
        return IndexStore.create(os.fspath(location), dim, config=config, model_info=model_info,
                                 descriptor_model=descriptor_model)
    if descriptor_model is not None:
        raise ValueError("a copy descriptor beside the class embedding needs an index directory: a Milvus "
                         "collection keeps one vector per item (build the index from the copy model alone)")
    from index.milvus.store import MilvusStore

    return MilvusStore.create(parsed, dim, config=config, model_info=model_info,
                              home=home or default_home(location))


def milvus_location(location: str | os.PathLike) -> MilvusLocation | None:
    return parse_location(os.fspath(location))

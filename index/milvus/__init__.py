"""The Milvus back end: :class:`MilvusStore`, the store interface (:class:`index.base.VectorStore`) on a
Milvus collection.

For collections and fleets one machine cannot hold: a Milvus cluster or standalone server
(``milvus://HOST:PORT/COLLECTION``, ``milvus+tls://...`` for TLS), or Milvus Lite for one process on one
machine (a local data directory whose name ends in ``.db``).  Every API server, CLI and notebook that opens
the same location sees the same items: the collection is created with ``consistency_level="Strong"`` and
every read asks for it, so an add or delete acknowledged through one server is seen by the next read
through any other.

Collection layout: ``id`` (INT64 primary key, drawn at random from [2**40, 2**53) so that a browser's
JavaScript numbers hold it exactly and ids imported from an embedded index (small integers) never collide),
``vector`` (FLOAT_VECTOR, L2-normalised, metric IP), ``label``, ``path`` (the image reference), ``added_at``
(Unix seconds) and ``source`` ("" for none).  The model stamp (checkpoint sha256, dimension, metric,
preprocessing), the index config and the home folder (``model.pt`` and uploaded images, shared by every
server) are stored as one JSON collection property, and a mismatching model is refused with the field named.

The token comes from ``$SIMSEARCH_MILVUS_TOKEN`` (``user:password`` or an API key), a CA bundle for TLS from
``$SIMSEARCH_MILVUS_CA``, the per-call timeout from ``$SIMSEARCH_MILVUS_TIMEOUT_S`` (default 10 s); none of
them ever appears in a location string, a log line or ``stats()``.

Durability is Milvus's: an insert or delete is acknowledged once its log entry is written (the message
queue on a server; Milvus Lite's write-ahead log, flushed to the OS on every write, so it survives a killed
process but not a power cut).  Server down or slow: calls raise :class:`IndexUnavailableError` after the
timeout, and the next call reconnects (gRPC channels reconnect by themselves).

Modules: :mod:`index.milvus.store` (the store), :mod:`index.milvus.replica` (the store as a replica, for a
re-embed behind a live server), :mod:`index.milvus.alias` (Milvus's aliases as simsearch aliases, with their
history), :mod:`index.milvus.client` (connecting), :mod:`index.milvus.errors` (pymilvus's errors in simsearch's
words); a location is parsed by :func:`index.location.parse_location`.
"""

from index.location import MilvusLocation, parse_location
from index.milvus.errors import MilvusMissing
from index.milvus.store import ID_HIGH, ID_LOW, MilvusStore

__all__ = ["ID_HIGH", "ID_LOW", "MilvusLocation", "MilvusMissing", "MilvusStore", "parse_location"]

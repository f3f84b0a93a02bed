"""Milvus's errors in simsearch's words: every pymilvus or gRPC failure becomes an :class:`IndexStoreError`
(:class:`IndexUnavailableError` when the server is down or slow), never a raw traceback."""

from __future__ import annotations

from index.errors import IndexStoreError, IndexUnavailableError
from index.location import MilvusLocation


class MilvusMissing(IndexStoreError):
    """``pymilvus`` is not installed (it is an optional extra)."""


class NotLoaded(IndexStoreError):
    """The collection is not loaded (the server restarted: Milvus Lite forgets loads); load it and retry."""


def call(location: MilvusLocation, what: str, fn, *args, **kwargs):
    """Call pymilvus, turning its errors into simsearch's (never a raw gRPC traceback)."""
    try:
        return fn(*args, **kwargs)
    except IndexStoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - pymilvus and grpc raise many types
        raise translate(exc, location, what) from None


def translate(exc: Exception, location: MilvusLocation, what: str) -> IndexStoreError:
    message = str(getattr(exc, "message", "") or exc)
    lower = message.lower()
    name = type(exc).__name__
    if "not loaded" in lower or "notloaded" in lower or "'released'" in lower or "call load" in lower:
        return NotLoaded(f"{location.display}: collection not loaded")
    if "datadirlocked" in lower or "locked" in lower and location.lite:
        return IndexStoreError(f"{location.display} is open in another process; Milvus Lite allows one process per "
                               f"data directory: run `milvus-lite server --data-dir {location.uri} --host 127.0.0.1` "
                               "and use milvus://127.0.0.1:19530/... from every process")
    if ("unavailable" in lower or "connect" in lower or "deadline" in lower or "timeout" in lower
            or "timed out" in lower or name in ("MilvusUnavailableException", "_InactiveRpcError", "RpcError")):
        return IndexUnavailableError(f"Milvus at {location.display} is unavailable ({what}: {_short(message)}); "
                                     "retry when it is back")
    if "collection not found" in lower or "can't find collection" in lower or "not exist" in lower:
        return IndexStoreError(f"{location.display}: the collection does not exist ({what})")
    if "dim" in lower and ("mismatch" in lower or "dimension" in lower):
        return IndexStoreError(f"{location.display}: vector dimension mismatch ({what}: {_short(message)})")
    return IndexStoreError(f"Milvus at {location.display} refused to {what}: {_short(message)}")


def _short(message: str, limit: int = 300) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit] + "..."

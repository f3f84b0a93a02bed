"""Exception types raised by the ``index`` package."""

from __future__ import annotations

import errno


class IndexStoreError(Exception):
    """An index directory is missing, corrupt, or cannot be used (a clear message, never a raw faiss/sqlite error).

    Not a bad value (no subclass of the built-in one): the caller's values may be fine while the index is broken
    or its server is down, so a handler of bad input does not catch it."""


class IndexMismatchError(IndexStoreError):
    """The index was built with a different embedding model than the one the caller expects.

    ``field`` names the first differing model-info field; ``stored`` and ``expected`` hold both values.
    """

    def __init__(self, field: str, stored: object, expected: object) -> None:
        self.field = field
        self.stored = stored
        self.expected = expected
        detail = ""
        if isinstance(stored, dict) and isinstance(expected, dict):
            keys = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
            detail = f" in key(s) {keys}"
        super().__init__(
            f"index was built for a different model: {field!r} differs{detail} "
            f"(index has {stored!r}, caller expects {expected!r})"
        )


class IndexBusyError(IndexStoreError):
    """Another writer held the index database longer than the busy timeout; nothing was written (retry)."""


class IndexUnavailableError(IndexStoreError):
    """The index's server (Milvus) is unreachable or timed out; nothing is known to have been written (retry:
    the store reconnects on the next call)."""


class IndexFullError(IndexStoreError):
    """The index's disk is full (ENOSPC/EDQUOT, or SQLite's "database or disk is full"); the write was rolled
    back and nothing of it was stored.  Reads go on."""


class IndexReadOnlyError(IndexStoreError):
    """The index folder cannot be written (a read-only file system, or no permission); nothing was stored.
    Reads go on."""


class IndexSupersededError(IndexStoreError):
    """The index takes no ordinary writes: it is a replica of ``successor`` (a re-embedded index being caught
    up before an alias switches to it, or the previous target after the switch).  Nothing was written; write
    through the alias, which now names (or is about to name) ``successor``."""

    def __init__(self, location: str, successor: str) -> None:
        self.successor = successor
        super().__init__(f"{location} takes no writes: it is a replica of {successor} (write through the alias, or "
                         "switch it with: simsearch alias set)")


class IndexDamagedError(IndexStoreError):
    """A file of the index is damaged (a SQLite page fails ``quick_check``, or the database is no database)."""


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(exc: OSError, what: str) -> IndexStoreError:
    """The index error for an ``OSError`` met while writing ``what`` (the detail stays in the message, for
    the log): :class:`IndexFullError`, :class:`IndexReadOnlyError`, or a plain :class:`IndexStoreError`."""
    kind = (IndexFullError if exc.errno in FULL_ERRNOS
            else IndexReadOnlyError if exc.errno in READ_ONLY_ERRNOS else IndexStoreError)
    return kind(f"{what}: {exc.strerror or exc}")

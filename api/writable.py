"""``WritableState``: whether this process can store writes now, and why not (for ``GET /api/health``).

Two signals: a cheap probe of the index's home (a read-only file system, no permission, the folder removed), and
the outcome of this process's last write (a full disk is only seen by writing).  A full disk counts as cleared once a write succeeds
or the free space has grown by :data:`FREED_BYTES` since the failure.  Each server worker keeps its own state.
"""

from __future__ import annotations

import threading

from durablefile import FOLDER_MISSING, folder_write_problem, free_bytes
from index import IndexFullError, IndexReadOnlyError, IndexStoreError

FREED_BYTES = 1 << 20  # 1 MiB more free space than when a write met a full disk: worth trying again
DISK_FULL = "the disk is full"
READ_ONLY = "the index folder is read-only"
REMOVED = "the index folder was removed or moved away; restart the server on an index"


class WritableState:
    """Tracks the write faults met in ``folder`` (the index's home)."""

    def __init__(self, folder: str) -> None:
        self._folder = folder
        self._lock = threading.Lock()
        self._fault: tuple[str, int] | None = None  # (reason, free bytes when it happened)

    def record(self, exc: IndexStoreError | None) -> None:
        """Note a write's outcome: None for success, else the index error it raised."""
        with self._lock:
            if exc is None:
                self._fault = None
            elif isinstance(exc, IndexFullError):
                self._fault = (DISK_FULL, free_bytes(self._folder))
            elif isinstance(exc, IndexReadOnlyError):
                self._fault = (READ_ONLY, 0)

    def problem(self) -> str | None:
        """Why writes are refused now, or None when they should be stored."""
        probe = folder_write_problem(self._folder)
        if probe == FOLDER_MISSING:
            return REMOVED
        if probe is not None:
            return f"{READ_ONLY} ({probe})"
        with self._lock:
            fault = self._fault
        if fault is None:
            return None
        reason, free_then = fault
        if reason == DISK_FULL and free_bytes(self._folder) > free_then + FREED_BYTES:
            return None
        return reason

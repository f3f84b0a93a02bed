"""``SharedIndex``: one process's view of an index directory that several processes (gunicorn workers)
read and write.

* Writes are serialised across processes with ``fcntl.flock`` on ``<index_dir>/.write.lock`` (and across
  threads with a mutex, since flock locks belong to the open file, not the thread).  A writer first reloads
  the store if another process saved a newer generation, then changes it and saves before releasing.
* Reads stay cheap: each one stats ``manifest.json`` (its inode changes on every save, which replaces it
  atomically) and reloads the store only when the manifest changed and names another generation.  A reload
  holds the lock shared, so no writer deletes the generation being opened, and waits for a save under way:
  a request never answers from a generation older than one acknowledged before it arrived.
* Reloaded stores are swapped in; the old one is closed once the last request that holds it is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator

from index import IndexStore

logger = logging.getLogger(__name__)

LOCK_FILE = ".write.lock"
MANIFEST = "manifest.json"


class _Lease:
    """A store plus how many requests are using it."""

    def __init__(self, store: IndexStore, generation: int) -> None:
        self.store = store
        self.generation = generation
        self.users = 0
        self.retired = False


class SharedIndex:
    """Hands out the current :class:`IndexStore` of ``directory``; ``opener()`` (re)opens it."""

    def __init__(self, directory: str, opener: Callable[[], IndexStore]) -> None:
        self._directory = directory
        self._opener = opener
        self._lease_lock = threading.Lock()
        self._write_mutex = threading.Lock()
        self._signature = self._manifest_signature()
        store = opener()
        self._current = _Lease(store, int(store.stats()["generation"]))
        self.reloads = 0

    @property
    def directory(self) -> str:
        return self._directory

    @property
    def generation(self) -> int:
        return self._current.generation

    # ------------------------------------------------------------------ public
    @contextlib.contextmanager
    def reading(self) -> Iterator[IndexStore]:
        """The freshest store this process has, held open for the duration of the block."""
        self.refresh()
        lease = self._acquire()
        try:
            yield lease.store
        finally:
            self._release(lease)

    @contextlib.contextmanager
    def writing(self) -> Iterator[IndexStore]:
        """The up-to-date store with the cross-process write lock held; the caller must ``save()`` it
        inside the block.  If the block raises, unsaved changes are dropped by reloading from disk."""
        with self._write_mutex, self._flock(fcntl.LOCK_EX):
            if self._disk_generation() != self._current.generation:
                self._swap()
            lease = self._acquire()
            try:
                yield lease.store
            except BaseException:
                logger.warning("write failed; reloading %s to drop unsaved changes", self._directory)
                self._swap()
                raise
            finally:
                self._release(lease)
            with self._lease_lock:
                self._current.generation = int(lease.store.stats()["generation"])
            self._signature = self._manifest_signature()

    def refresh(self) -> bool:
        """Reload if another process saved a new generation; returns whether it reloaded.  Costs one
        ``stat`` when nothing changed.  Otherwise it waits for any save under way to finish (and for a
        reload by another thread), so that no request answers from a generation older than the newest
        one acknowledged before the request arrived."""
        signature = self._manifest_signature()
        if signature == self._signature:
            return False
        # the writers' lock order: the thread mutex (which also serialises every swap), then the flock
        with self._write_mutex:
            try:
                with self._flock(fcntl.LOCK_SH):
                    signature = self._manifest_signature()
                    if signature == self._signature:
                        return False  # another thread reloaded while this one waited
                    if self._disk_generation() == self._current.generation:
                        self._signature = signature
                        return False
                    self._swap()
                    return True
            except Exception:  # noqa: BLE001 - keep serving the old store rather than fail the request
                logger.exception("could not reload index %s; serving generation %d", self._directory,
                                 self._current.generation)
                return False

    def close(self) -> None:
        with self._lease_lock:
            lease = self._current
            lease.retired = True
            close_now = lease.users == 0
        if close_now:
            lease.store.close()

    # ------------------------------------------------------------------ internals
    def _manifest_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(os.path.join(self._directory, MANIFEST))
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _disk_generation(self) -> int | None:
        try:
            with open(os.path.join(self._directory, MANIFEST)) as handle:
                return int(json.load(handle)["generation"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @contextlib.contextmanager
    def _flock(self, mode: int) -> Iterator[None]:
        path = os.path.join(self._directory, LOCK_FILE)
        try:
            handle = open(path, "a+b")
        except OSError as exc:
            if not mode & fcntl.LOCK_EX:  # a read-only directory: nobody can be writing it through us
                logger.debug("no lock file %s (%s); reloading without it", path, exc)
                yield
                return
            raise
        with handle:
            fcntl.flock(handle.fileno(), mode)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _swap(self) -> None:
        """Open the saved generation and make it current; callers hold ``_write_mutex``."""
        signature = self._manifest_signature()
        store = self._opener()
        lease = _Lease(store, int(store.stats()["generation"]))
        with self._lease_lock:
            old, self._current = self._current, lease
            old.retired = True
            close_old = old.users == 0
            self._signature = signature
            self.reloads += 1
        if close_old:
            old.store.close()
        logger.info("reloaded index %s at generation %d (was %d)", self._directory, lease.generation,
                    old.generation)

    def _acquire(self) -> _Lease:
        with self._lease_lock:
            lease = self._current
            lease.users += 1
            return lease

    def _release(self, lease: _Lease) -> None:
        with self._lease_lock:
            lease.users -= 1
            close_now = lease.retired and lease.users == 0
        if close_now:
            lease.store.close()

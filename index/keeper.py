"""``ViewKeeper``: keeps one process's FAISS view of an index in step with its SQLite truth.

The view is loaded from the newest snapshot (a FAISS file stamped with the log seq it covers) and caught up
by applying the change log after that seq; before every read :meth:`ViewKeeper.refresh` compares the log
head with the view (one cheap query) and applies only what is new.  Snapshots are written here, and so is
compaction (a rebuild from the truth).  When another process writes a rebuilt snapshot, it is loaded in a
background thread and swapped in; a snapshot that merely copies a view is adopted as it is.

Lineage: every snapshot records the rebuilt snapshot its structure descends from (a rebuild is its own).  A
process whose view descends from an older rebuild than the newest recorded one loads the newer structure
before it writes a snapshot, so a process that missed a rebuild (and the plain snapshots written after it)
never records its stale structure as the newest.  The automatic policy writes snapshots only; a rebuild
(compaction) runs when asked for (``simsearch index compact``), or in the background of a small index only
(``IndexConfig.background_rebuild_max_vectors``).

Locks: the catch-up lock lets one thread at a time apply changes (the others wait, then find nothing to
do); the snapshot lock (an ``flock`` on ``snapshots/.lock``) lets one process at a time write snapshot
files; it guards the derived files only, never the data, which SQLite orders.  A thread that holds the
catch-up lock never waits for the snapshot lock (compaction takes them in the other order).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from durablefile import atomic_path, file_sha256
from index import factory
from index.base import CompactResult
from index.config import IndexConfig, choose_index_type
from index.db import SnapshotRow, StoreDB
from index.errors import IndexStoreError
from index.view import IndexView

logger = logging.getLogger(__name__)

SNAPSHOT_DIR = "snapshots"
SNAPSHOT_LOCK = ".lock"
LEGACY_SNAPSHOT_DIR = "checkpoints"  # the folder's name in index format version 2


def snapshot_folder(directory: str) -> str:
    """``<directory>/snapshots``, created if missing.  An index of format version 2 kept its snapshots in
    ``checkpoints/``: that folder is renamed once (by whichever process gets there first)."""
    folder = os.path.join(directory, SNAPSHOT_DIR)
    legacy = os.path.join(directory, LEGACY_SNAPSHOT_DIR)
    if os.path.isdir(legacy) and not os.path.isdir(folder):
        try:
            os.rename(legacy, folder)
            logger.info("index %s: renamed %s/ to %s/", directory, LEGACY_SNAPSHOT_DIR, SNAPSHOT_DIR)
        except OSError:  # another process renamed it first (or made a new one meanwhile: the view rebuilds)
            pass
    os.makedirs(folder, exist_ok=True)
    return folder


class ViewKeeper:
    """The view of one index directory in this process; thread-safe."""

    def __init__(self, directory: str, db: StoreDB, dim: int, config: IndexConfig) -> None:
        self._directory = directory
        self._db = db
        self._dim = dim
        self._config = config
        self._catch_up_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._reloading = False
        self._threads: list[threading.Thread] = []  # background reloads and snapshots of this process
        self._threads_lock = threading.Lock()
        self._own_files: set[str] = set()  # snapshot files this process wrote (never reloaded from disk)
        self._opened_at = time.time()
        self._damaged_gen = 0  # a snapshot found unusable here: the next snapshot() replaces it
        # the lineage of each view this keeper made (see the module docstring); 0: older than every rebuild
        self._lineages: weakref.WeakKeyDictionary[IndexView, int] = weakref.WeakKeyDictionary()
        snapshot_folder(directory)  # e.g. only store.sqlite restored, or the folder of format version 2
        self._view: IndexView = self._load_view()
        self._sweep_leftovers()

    def _sweep_leftovers(self) -> None:
        """Delete what a process stopped mid-snapshot left in the snapshot folder (a half-written file can be as
        large as the index), unless another process holds the snapshot lock (it may be writing one now: its own
        snapshot sweeps them). A read-only or busy folder is left as it is: the next snapshot sweeps it."""
        folder = os.path.join(self._directory, SNAPSHOT_DIR)
        try:
            named = {r[0] for r in self._db.query("SELECT file FROM snapshots")}
            if all(name == SNAPSHOT_LOCK or name in named for name in os.listdir(folder)):
                return
            with self._snapshot_lock(blocking=False) as got:
                if got:
                    self._remove_stale_snapshot_files(folder)
        except (OSError, IndexStoreError) as exc:
            logger.info("index %s: left the snapshot folder's leftovers for the next snapshot: %s",
                        self._directory, exc)

    @property
    def view(self) -> IndexView:
        """The current view (call :meth:`refresh` first to include every committed change)."""
        return self._view

    def lineage_of(self, view: IndexView) -> int:
        """The generation of the rebuilt snapshot whose structure ``view`` carries (0: none recorded)."""
        return self._lineages.get(view, 0)

    def after_write(self) -> None:
        """Include this process's own write at once, then apply the automatic snapshot policy."""
        self.refresh()
        if self._config.auto_snapshot:
            self._maybe_snapshot_in_background()

    def _load_view(self) -> IndexView:
        """The newest snapshot caught up with the log (or, without a usable one, a view of the truth)."""
        return self._caught_up(self._snapshot_view())

    def _snapshot_view(self) -> IndexView:
        """The newest snapshot as a view, not yet caught up: read again if a newer snapshot replaced it
        while it was being read; an empty view when there is none yet; built from the truth when its file is
        unusable, or when an IVF index holds data but has no snapshot (see :meth:`_first_trained_view`)."""
        for _attempt in range(5):
            with self._db.read_transaction() as conn:
                row = StoreDB.snapshot_row(conn)
                index_type = StoreDB.get_setting(conn, "index_type")
                fstring = StoreDB.get_setting(conn, "factory")
                has_items = conn.execute("SELECT 1 FROM items LIMIT 1").fetchone() is not None
            if row is None:
                view = IndexView.empty(self._dim, self._config, index_type, fstring)
                return view if view.is_trained or not has_items else self._first_trained_view()
            try:
                return self._read_snapshot(row)
            except FileNotFoundError:
                logger.info("snapshot %s was replaced while being read; reading the newest one", row.file)
            except (OSError, ValueError, RuntimeError) as exc:
                logger.warning("snapshot %s is unusable (%s); rebuilding the view from the database",
                               row.file, exc)
                self._damaged_gen = row.gen
                break
        return self._rebuild_view()

    def _first_trained_view(self) -> IndexView:
        """An IVF index is trained once, by whichever process takes the snapshot lock first, and written
        as the first snapshot, so that every process searches the same quantizer.  If the lock is taken (a
        compaction in this or another process), train locally for now (seeded, so the same on the same data)
        and switch to the snapshot when it appears; never wait for that lock while holding the catch-up
        lock, which a compaction takes after it."""
        with self._snapshot_lock(blocking=False) as got:
            if not got:
                return self._rebuild_view()
            with self._db.read_transaction() as conn:
                row = StoreDB.snapshot_row(conn)
            if row is not None:
                return self._read_snapshot(row)
            view = self._rebuild_view()
            if view.index is not None and view.is_trained:
                self._write_snapshot(view, rebuilt=True)
            return view

    def _read_snapshot(self, row: SnapshotRow) -> IndexView:
        path = os.path.join(self._directory, SNAPSHOT_DIR, row.file)
        with open(path, "rb") as handle:  # one open file: a pruning that unlinks it meanwhile changes nothing
            if file_sha256(handle) != row.sha256:
                raise ValueError("sha256 does not match the database")
            handle.seek(0)
            view = IndexView.from_file(handle, dim=self._dim, config=self._config, index_type=row.index_type,
                                       factory_string=row.factory, seq=row.seq, gen=row.gen,
                                       tombstones=row.tombstones, trained_on=row.trained_on)
        self._lineages[view] = row.lineage
        return view

    def _rebuild_view(self, fstring: str | None = None) -> IndexView:
        """A view built from every vector in the truth (the slow path: compaction, or a lost snapshot).

        It takes the generation and lineage of the newest snapshot, which it is at least as new as: with gen 0,
        an unusable newest snapshot would start a background reload (another full rebuild) at every read."""
        started = time.perf_counter()
        with self._db.read_transaction() as conn:  # one consistent state, read in chunks
            seq = StoreDB.head(conn)
            newest = StoreDB.snapshot_row(conn)
            index_type = StoreDB.get_setting(conn, "index_type")
            fstring = fstring or StoreDB.get_setting(conn, "factory")
            gen = newest.gen if newest is not None else 0
            if fstring is None:
                return IndexView.empty(self._dim, self._config, None, None, seq=seq, gen=gen)
            index_type = factory.index_type_of(fstring) or index_type

            def sample(size: int):  # the seeded training sample, read by id
                return StoreDB.sample_vectors(conn, self._dim,
                                              lambda n: factory.sample_positions(n, size, self._config.seed))

            view = IndexView.build(StoreDB.iter_vectors(conn, self._dim), sample=sample, dim=self._dim,
                                   config=self._config, index_type=index_type, factory_string=fstring, seq=seq)
        view.gen = gen
        self._lineages[view] = newest.lineage if newest is not None else 0
        logger.info("built %s over %d vectors at seq %d in %.1f s", fstring, view.stored, seq,
                    time.perf_counter() - started)
        return view

    def refresh(self) -> None:
        """Bring this process's view up to the log head: one cheap query when nothing changed."""
        head, gen = self._db.head_and_snapshot()
        view = self._view
        if gen > view.gen and not self._reloading:
            self._on_new_snapshot(view)
        if head > view.seq:
            with self._catch_up_lock:  # one thread at a time; the others wait, then find nothing to do
                current = self._view
                caught_up = self._caught_up(current)
                if caught_up is not current:
                    self._swap(caught_up)

    def _caught_up(self, view: IndexView) -> IndexView:
        """``view`` with the log after ``view.seq`` applied (O(1) per change), or the newest snapshot caught
        up instead when ``view`` is behind the pruned log or its index still has to be trained.  Caller holds
        the catch-up lock (or owns ``view`` alone)."""
        with self._db.read_transaction() as conn:
            floor = int(StoreDB.get_setting(conn, "log_floor", 0))
            fstring = StoreDB.get_setting(conn, "factory")
            changes = StoreDB.changes_since(conn, view.seq, self._dim) if view.seq >= floor else None
        if view.index is None and fstring is not None and changes is not None:  # a first add decided the type
            lineage = self.lineage_of(view)
            view = IndexView.empty(self._dim, self._config, factory.index_type_of(fstring), fstring, seq=view.seq,
                                   gen=view.gen)
            self._lineages[view] = lineage
        if changes is None or (len(changes.add_ids) and not view.is_trained):
            return self._caught_up(self._snapshot_view())
        if len(changes) or changes.head != view.seq:
            with view.lock.write():
                view.apply(changes)
        return view

    def _swap(self, view: IndexView) -> None:
        old, self._view = self._view, view
        logger.info("index %s: view now at snapshot %d, seq %d (was %d, seq %d)", self._directory, view.gen,
                    view.seq, old.gen, old.seq)

    def _on_new_snapshot(self, view: IndexView) -> None:
        """Another process wrote a snapshot.  A copy of a view of the same lineage changes nothing for this
        one (adopt its generation); one that descends from a newer rebuild (fewer tombstones, another index
        type, a retrained IVF), even through plain snapshots written after it, is loaded."""
        with self._db.read_transaction() as conn:
            row = StoreDB.snapshot_row(conn)
        if row is None or row.gen <= view.gen or row.file in self._own_files:
            return  # (its writer sets the generation of the view it wrote)
        if self._is_newer_structure(row, view):
            self._reload_in_background()
        else:
            view.gen = row.gen

    def _is_newer_structure(self, row: SnapshotRow, view: IndexView) -> bool:
        """Whether snapshot ``row`` carries a structure newer than ``view``'s: a later rebuild, or another
        index type (a newer snapshot always has the newer lineage of the two)."""
        return row.lineage > self.lineage_of(view) or (row.gen > view.gen and row.factory != view.factory)

    def _reload_in_background(self) -> None:
        """Another process wrote a newer snapshot (e.g. a compaction): load it aside, then swap it in."""
        with self._reload_lock:
            if self._reloading:
                return
            self._reloading = True

        def reload() -> None:
            try:
                view = self._snapshot_view()  # the slow part (reading a file), outside the lock
                with self._catch_up_lock:
                    view = self._caught_up(view)
                    if view.gen >= self._view.gen:  # not over a view this process rebuilt meanwhile
                        self._swap(view)
            except Exception:  # noqa: BLE001 - keep serving the current view; the next read retries
                logger.exception("could not load the newer snapshot of %s", self._directory)
            finally:
                self._reloading = False

        self._start_background(reload, "simsearch-reload")

    def _start_background(self, target, name: str) -> bool:
        """Start ``target`` in a thread called ``name`` unless one of that name is still running."""
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            if any(t.name == name for t in self._threads):
                return False
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        return True

    def wait_for_background(self, timeout: float | None = None) -> None:
        """Wait for the background reloads and snapshots of this process (tests and benchmarks use it)."""
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    # ------------------------------------------------------------------ snapshots and compaction
    @contextmanager
    def _snapshot_lock(self, blocking: bool = True) -> Iterator[bool]:
        """An exclusive ``flock`` over the snapshot files (a derived view, never the data: the data is
        ordered by SQLite).  Yields False when ``blocking`` is off and another process holds it."""
        path = os.path.join(self._directory, SNAPSHOT_DIR, SNAPSHOT_LOCK)
        with open(path, "a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def snapshot(self) -> int:
        """Write this process's view as a new snapshot (searches go on meanwhile); returns its generation."""
        with self._snapshot_lock():
            self.refresh()
            newest = self._adopt_rebuilt_snapshot()
            if newest is not None and newest.seq >= self._view.seq and newest.gen != self._damaged_gen:
                # nothing to add: the newest snapshot already covers this view; still clear what a killed
                # snapshot or compaction left behind (a half-written file can be as large as the index)
                self._remove_stale_snapshot_files(os.path.join(self._directory, SNAPSHOT_DIR))
                return newest.gen
            return self._write_snapshot(self._view)

    def _adopt_rebuilt_snapshot(self) -> SnapshotRow | None:
        """Under the snapshot lock, before deciding anything from this process's view: if another process
        wrote a rebuilt snapshot that this one has not loaded yet (its background reload may be under way),
        load it now, so that a snapshot or compaction here never writes an older structure over it.
        Returns the newest snapshot row."""
        with self._db.read_transaction() as conn:
            newest = StoreDB.snapshot_row(conn)
        view = self._view
        if newest is not None and newest.file not in self._own_files and self._is_newer_structure(newest, view):
            fresh = self._snapshot_view()
            with self._catch_up_lock:
                self._swap(self._caught_up(fresh))
        return newest

    def _write_snapshot(self, view: IndexView, rebuilt: bool = False) -> int:
        """Write ``view`` to a temporary file under its read lock (streamed, no copy in memory), then hash,
        fsync and rename it, then record it in SQLite (the commit point) and prune older snapshots and the log
        they covered; then checkpoint and truncate SQLite's log.  Caller holds the snapshot lock, and has adopted
        any newer rebuild (:meth:`_adopt_rebuilt_snapshot`): a view of an older lineage is not recorded (returns
        the newest gen)."""
        if view.index is None:
            return 0
        lineage = self.lineage_of(view)
        folder = os.path.join(self._directory, SNAPSHOT_DIR)
        with ExitStack() as reading:
            reading.enter_context(view.lock.read())
            seq, tombstones, stored = view.seq, view.tombstones(), view.stored
            name = f"view.{seq}.{uuid.uuid4().hex[:8]}.faiss"
            self._own_files.add(name)
            with atomic_path(os.path.join(folder, name)) as tmp:
                view.write(tmp)  # streamed to the file: no second copy of the index in memory
                reading.close()  # searches and catch-up go on while the file is hashed and synced
                sha256, nbytes = file_sha256(tmp), os.path.getsize(tmp)
        with self._db.transaction() as conn:
            newest = StoreDB.newest_lineage(conn)
            stale = not rebuilt and lineage < newest
            if not stale:
                gen = StoreDB.record_snapshot(conn, seq=seq, file=name, sha256=sha256,
                                              index_type=view.index_type, factory=view.factory, stored=stored,
                                              tombstones=tombstones, trained_on=view.trained_on, rebuilt=rebuilt,
                                              lineage=lineage)
                StoreDB.set_setting(conn, "index_type", view.index_type)
                StoreDB.set_setting(conn, "factory", view.factory)
                StoreDB.prune(conn)
            else:
                gen = StoreDB.snapshot_row(conn).gen
        self._remove_stale_snapshot_files(folder)
        if stale:  # not reached while every writer adopts first; kept as the guard of the invariant
            logger.warning("index %s: not recording a snapshot of lineage %d below the newest, %d", self._directory,
                           lineage, newest)
            return gen
        view.gen = gen
        self._lineages[view] = gen if rebuilt else lineage
        logger.info("snapshot %d of %s at seq %d: %d vectors, %d tombstones, %.1f MB", gen, self._directory, seq,
                    stored, len(tombstones), nbytes / 1e6)
        self._checkpoint_wal()
        return gen

    def _checkpoint_wal(self) -> None:
        """Truncate SQLite's log after a snapshot (here, not at every write: the process that did the snapshot's
        work pays for it).  The snapshot is recorded already: a failure is only logged."""
        try:
            if not self._db.checkpoint_wal():
                logger.info("index %s: the database was busy; its log is checkpointed at the next snapshot",
                            self._directory)
        except IndexStoreError as exc:
            logger.warning("index %s: could not checkpoint the database log: %s", self._directory, exc)

    def _remove_stale_snapshot_files(self, folder: str) -> None:
        """Delete snapshot files no row names (older generations, and leftovers of a crash mid-write);
        caller holds the snapshot lock, so no other process is writing one."""
        named = {r[0] for r in self._db.query("SELECT file FROM snapshots")}
        for name in os.listdir(folder):
            if name != SNAPSHOT_LOCK and name not in named:
                try:
                    os.remove(os.path.join(folder, name))
                except OSError as exc:  # harmless: the next snapshot retries
                    logger.warning("could not remove stale snapshot file %s: %s", name, exc)

    def compact(self, *, force: bool = False, blocking: bool = True, rebuild: bool = True) -> CompactResult | None:
        """Write a new snapshot.  Rebuild the FAISS index from the truth first when tombstones exceed
        ``config.compact_fraction`` of the stored vectors (any tombstone with ``force``), when an ``auto``
        index has outgrown its type, or when IVF has outgrown its training sample (4x); otherwise the
        current view is written as it is, unless the newest snapshot already covers it.  Searches continue
        meanwhile (in this and other processes).  With ``blocking`` off, returns None at once when another
        process or thread holds the snapshot lock.  With ``rebuild`` off, never rebuilds (the automatic
        policy: a due rebuild is only reported, see :meth:`rebuild_due`)."""
        started = time.perf_counter()
        with self._snapshot_lock(blocking) as got:
            if not got:
                return None
            self.refresh()
            newest = self._adopt_rebuilt_snapshot()
            view = self._view
            reason = self._rebuild_reason(view, force)
            if reason and not rebuild:
                logger.info("index %s: compaction due (%s); run: simsearch index compact %s", self._directory,
                            reason, self._directory)
                reason = ""
            if not reason and newest is not None and newest.seq >= view.seq and newest.gen != self._damaged_gen:
                return CompactResult(False, "the newest snapshot covers the view", newest.gen, newest.seq, 0,
                                     round(time.perf_counter() - started, 3))
            dropped = view.tombstone_count
            if reason:
                target = self._target_factory(view)
                fresh = self._rebuild_view(target)
                with self._catch_up_lock:
                    fresh = self._caught_up(fresh)
                    self._swap(fresh)
                view = fresh
                dropped -= fresh.tombstone_count
            else:
                dropped = 0
            gen = self._write_snapshot(view, rebuilt=bool(reason))
        return CompactResult(bool(reason), reason or "snapshot only", gen, view.seq, dropped,
                             round(time.perf_counter() - started, 3))

    def rebuild_due(self) -> str:
        """Why a compaction would rebuild the view now, or "" when it would not (cheap: no I/O beyond the
        catch-up of :meth:`refresh`)."""
        self.refresh()
        return self._rebuild_reason(self._view, False)

    def _target_factory(self, view: IndexView) -> str:
        if self._config.index_type == "auto" or view.index_type == "ivfpq":
            n = max(view.live, 1)
            return factory.factory_string(choose_index_type(n, self._dim, self._config), self._dim, self._config, n)
        return view.factory

    def _rebuild_reason(self, view: IndexView, force: bool) -> str:
        if view.index is None:
            return ""
        if view.tombstone_count and (force or view.tombstone_count >= self._config.compact_fraction * view.stored):
            return f"{view.tombstone_count} tombstones of {view.stored} stored vectors"
        outgrown = factory.index_type_of(self._target_factory(view)) != view.index_type
        if self._config.index_type == "auto" and outgrown:
            return f"{view.live} items outgrew {view.index_type}"
        if view.index_type == "ivfpq" and view.trained_on and view.live > 4 * view.trained_on:
            return f"IVF trained on {view.trained_on} vectors, now {view.live}"
        return ""

    def _maybe_snapshot_in_background(self) -> None:
        """The automatic policy: after ``config.snapshot_every`` changes since the newest snapshot, or
        after ``config.snapshot_interval_s`` with any change pending, snapshot in a background thread of
        whichever process notices first (the others skip: the lock is taken).  A rebuild that is due runs
        there only while the view holds at most ``config.background_rebuild_max_vectors`` (0 by default:
        never, so that no API worker spends minutes of CPU on it; ``simsearch index compact`` does it)."""
        with self._db.read_transaction() as conn:
            head = StoreDB.head(conn)
            newest = StoreDB.newest_snapshot_time(conn)  # (seq, created_at) or None: no tombstone blob
        pending = head - (newest[0] if newest else 0)
        age = time.time() - (newest[1] if newest else self._opened_at)
        if pending < self._config.snapshot_every and not (pending and age >= self._config.snapshot_interval_s):
            return

        def run() -> None:
            try:
                # another process or thread at it: nothing to do here
                self.compact(blocking=False,
                             rebuild=self._view.stored <= self._config.background_rebuild_max_vectors)
            except Exception:  # noqa: BLE001 - the log stays the truth; the next write tries again
                logger.exception("automatic snapshot of %s failed", self._directory)

        self._start_background(run, "simsearch-snapshot")

    def close(self) -> None:
        self.wait_for_background()

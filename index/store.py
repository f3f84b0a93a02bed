"""``IndexStore``: an index directory whose truth is SQLite (WAL) and whose FAISS index is a view of it.

Layout of ``<index_dir>``::

    store.sqlite (+ -wal, -shm)     the truth: items with their vectors, the change log, settings, checkpoints
    checkpoints/view.<seq>.<id>.faiss   FAISS checkpoints, each stamped (in SQLite) with the log seq it covers

Writes (:meth:`add`, :meth:`remove`) are one SQLite transaction each, durable when they return, O(1) in
the collection size, and safe from any number of threads and processes at once (SQLite orders them).
Reads (:meth:`search` and friends) first compare the log head with the view's seq (one cheap query) and
apply only the new entries, so a write acknowledged in one process is seen by the next search in every
other.  :meth:`checkpoint` and :meth:`compact` write a new checkpoint (compaction rebuilds the FAISS index
from the truth, dropping tombstones and retraining IVF); other processes switch to it in the background.

Scores: a neighbour's ``similarity`` is the inner product of L2-normalised vectors, i.e. the cosine in
[-1, 1] (approximate for IVF-PQ, which compares compressed codes); ``score = (1 + similarity) / 2``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from index import factory, persist
from index.arrays import check_ids, check_positive_int, check_strings, check_vectors, normalized
from index.config import IndexConfig, choose_index_type
from index.db import DB_FILE, FORMAT, FORMAT_VERSION, CheckpointRow, ItemMeta, StoreDB, db_path
from index.errors import IndexStoreError
from index.view import IndexView

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_LOCK = ".lock"
LEGACY_MANIFEST = "manifest.json"  # the generation-file layout of simsearch <= 0.1 (see index.migrate)


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


@dataclass(frozen=True)
class CompactResult:
    """What :meth:`IndexStore.compact` did: ``rebuilt`` (the FAISS index from the truth) and why,
    the checkpoint it wrote, and how many tombstones it dropped."""

    rebuilt: bool
    reason: str
    checkpoint_gen: int
    checkpoint_seq: int
    dropped_tombstones: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class IndexStore:
    """Build with :meth:`create`, reopen with :meth:`open`; see the module docstring for the guarantees.

    One instance serves all the threads of a process; open one per process."""

    def __init__(self, directory: str, db: StoreDB, settings: dict) -> None:
        self._directory = directory
        self._db = db
        self._settings = settings
        self._dim = int(settings["dim"])
        self._config = IndexConfig.from_dict(settings["config"])
        self._catch_up_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._reloading = False
        self._background: threading.Thread | None = None
        self._view: IndexView = self._load_view()
        self._last_checkpoint_check = time.monotonic()

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, directory: str | os.PathLike, dim: int, *, config: IndexConfig = IndexConfig(),
               model_info: dict, synchronous: str = "full") -> "IndexStore":
        """A new, empty index in ``directory`` (created if missing; must not already hold an index).
        ``model_info`` needs ``checkpoint_sha256``, ``embedding_dim`` (== ``dim``), ``metric`` and
        ``preprocess`` (a dict).  The database appears atomically (written aside, then renamed)."""
        dim = check_positive_int(dim, "dim")
        if not isinstance(config, IndexConfig):
            raise ValueError(f"config must be an IndexConfig, got {type(config).__name__}")
        model = persist.validate_model_info(model_info, dim)
        directory = os.fspath(directory)
        os.makedirs(os.path.join(directory, CHECKPOINT_DIR), exist_ok=True)
        for name in (DB_FILE, LEGACY_MANIFEST):
            if os.path.exists(os.path.join(directory, name)):
                raise IndexStoreError(f"{directory} already holds an index; open it or pick another directory")
        index_type = fstring = None
        if config.index_type in ("flat", "hnsw") or config.expected_size is not None:
            n = config.expected_size or 0
            index_type = choose_index_type(n, dim, config)
            fstring = factory.factory_string(index_type, dim, config, n)
        settings = {"format": FORMAT, "format_version": FORMAT_VERSION, "dim": dim, "model": model,
                    "config": config.to_dict(), "index_type": index_type, "factory": fstring,
                    "created_at": _now(), "next_id": 0, "log_floor": 0}
        tmp = db_path(directory) + f".{uuid.uuid4().hex[:8]}.tmp"
        StoreDB.create(tmp, settings, synchronous=synchronous).close()
        persist.fsync_file(tmp)
        os.replace(tmp, db_path(directory))
        persist.fsync_dir(directory)
        return cls.open(directory, synchronous=synchronous)

    @classmethod
    def open(cls, directory: str | os.PathLike, *, expect_model: dict | None = None,
             synchronous: str = "full", busy_timeout_s: float = 30.0) -> "IndexStore":
        """Open the index in ``directory``: load the newest checkpoint and catch up with the log.

        Raises ``IndexMismatchError`` when ``expect_model`` differs from the stored model identity in
        ``checkpoint_sha256``, ``embedding_dim``, ``metric`` or ``preprocess``, and ``IndexStoreError`` when
        the directory is missing, is not an index, or was made by an older simsearch (with the command that
        migrates it).
        """
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise IndexStoreError(f"index directory {directory} does not exist")
        if not os.path.isfile(db_path(directory)):
            if os.path.isfile(os.path.join(directory, LEGACY_MANIFEST)):
                raise IndexStoreError(f"{directory} holds an index in the old layout of simsearch 0.1; migrate it "
                                      f"once with: simsearch index migrate {directory}")
            raise IndexStoreError(f"{directory} is not an index directory: {DB_FILE} is missing")
        db = StoreDB(db_path(directory), synchronous=synchronous, busy_timeout_s=busy_timeout_s)
        try:
            settings = db.settings()
            _check_settings(settings, db.path)
            if expect_model is not None:
                persist.check_model(settings["model"], expect_model)
            store = cls(directory, db, settings)
        except BaseException:
            db.close()
            raise
        logger.info("opened index %s: %d items, %s, view at seq %d", directory, len(store), store.factory,
                    store._view.seq)
        return store

    # ------------------------------------------------------------------ properties
    @property
    def directory(self) -> str:
        return self._directory

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def config(self) -> IndexConfig:
        return self._config

    @property
    def index_type(self) -> str | None:
        """``"flat"``, ``"hnsw"``, ``"ivfpq"``, or None while an ``auto`` index is still empty."""
        self._refresh()
        return self._view.index_type

    @property
    def factory(self) -> str | None:
        return self._view.factory

    @property
    def model_info(self) -> dict:
        return dict(self._settings["model"])

    def __len__(self) -> int:
        self._refresh()
        return self._view.live

    def log_head(self) -> int:
        """The seq of the newest committed change (one cheap query)."""
        return self._db.head_and_checkpoint()[0]

    # ------------------------------------------------------------------ writes
    def add(self, vectors: np.ndarray, *, labels: list[str], paths: list[str],
            sources: list[str] | None = None) -> np.ndarray:
        """Append ``vectors: (n, d) float32`` with their labels and paths in one durable transaction;
        returns their new ids, ``(n,) int64`` (never reused, even after deletes)."""
        xb = check_vectors(vectors, self._dim, "vectors")
        n = len(xb)
        labels = check_strings(labels, n, "labels")
        paths = check_strings(paths, n, "paths")
        sources = check_strings(sources, n, "sources", optional=True)
        if self._config.normalize and n:
            xb = normalized(xb, "vectors")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        with self._db.transaction() as conn:
            if StoreDB.get_setting(conn, "factory") is None:
                self._decide_index_type(conn, n)
            self._check_trainable(conn, n)
            ids = StoreDB.insert_items(conn, xb, labels, paths, sources)
        self._after_write()
        return ids

    def remove(self, ids: int | list[int] | np.ndarray) -> list[ItemMeta]:
        """Delete items by id in one durable transaction (unknown or already deleted ids are ignored);
        returns the items that were deleted.  Their vectors leave searches at once (tombstones) and the
        FAISS structure at the next compaction."""
        ids = check_ids(ids)
        if not len(ids):
            return []
        with self._db.transaction() as conn:
            gone = StoreDB.delete_items(conn, ids)
        if gone:
            self._after_write()
        return gone

    def _decide_index_type(self, conn, n: int) -> None:
        """Resolve ``auto`` with the first batch (inside its transaction, so every process agrees)."""
        size = max(self._config.expected_size or 0, n)
        index_type = choose_index_type(size, self._dim, self._config)
        fstring = factory.factory_string(index_type, self._dim, self._config, size)
        StoreDB.set_setting(conn, "index_type", index_type)
        StoreDB.set_setting(conn, "factory", fstring)
        logger.info("index type %s (%s) for %d expected vectors", index_type, fstring, size)

    def _check_trainable(self, conn, n: int) -> None:
        """Refuse (before committing) a first IVF batch too small to train on."""
        if StoreDB.checkpoint_row(conn) is not None:
            return
        fstring = StoreDB.get_setting(conn, "factory")
        need = factory.training_need(factory.new_index(fstring, self._dim, self._config), self._config)
        have = int(conn.execute("SELECT count(*) FROM items").fetchone()[0]) if need else 0
        if need and have + n < need:
            raise ValueError(f"an IVF-PQ index needs at least {need} vectors to train, got {have + n}; "
                             "add a larger first batch or use index_type='flat'/'hnsw'")

    def _after_write(self) -> None:
        self._refresh()
        if self._config.auto_checkpoint:
            self._maybe_checkpoint_in_background()

    # ------------------------------------------------------------------ the view
    def _load_view(self) -> IndexView:
        """The view from the newest checkpoint (retrying if a newer one replaced it meanwhile), caught up;
        rebuilt from the truth when there is no usable checkpoint."""
        for _attempt in range(5):
            with self._db.snapshot() as conn:
                row = StoreDB.checkpoint_row(conn)
                settings = {"index_type": StoreDB.get_setting(conn, "index_type"),
                            "factory": StoreDB.get_setting(conn, "factory")}
            if row is None:
                view = IndexView.empty(self._dim, self._config, settings["index_type"], settings["factory"])
                if view.is_trained:
                    break
                return self._rebuild_view()  # an IVF index that has data but no checkpoint yet
            try:
                view = self._read_checkpoint(row)
                break
            except FileNotFoundError:
                logger.info("checkpoint %s was replaced while opening; trying the newest one", row.file)
                continue
            except (OSError, ValueError, RuntimeError) as exc:
                logger.warning("checkpoint %s is unusable (%s); rebuilding the view from the database",
                               row.file, exc)
                return self._rebuild_view()
        else:
            return self._rebuild_view()
        return self._caught_up(view)

    def _read_checkpoint(self, row: CheckpointRow) -> IndexView:
        path = os.path.join(self._directory, CHECKPOINT_DIR, row.file)
        with open(path, "rb") as handle:
            blob = np.frombuffer(handle.read(), dtype=np.uint8)
        if persist.sha256_bytes(blob) != row.sha256:
            raise ValueError("sha256 does not match the database")
        return IndexView.from_bytes(blob, dim=self._dim, config=self._config, index_type=row.index_type,
                                    factory_string=row.factory, seq=row.seq, gen=row.gen,
                                    tombstones=row.tombstones, trained_on=row.trained_on)

    def _rebuild_view(self, fstring: str | None = None) -> IndexView:
        """A view built from every vector in the truth (the slow path: compaction, or a lost checkpoint).

        It takes the generation of the newest checkpoint, which it is at least as new as: with gen 0, an
        unusable newest checkpoint would start a background reload (another full rebuild) at every read."""
        with self._db.snapshot() as conn:
            seq = StoreDB.head(conn)
            newest = StoreDB.checkpoint_row(conn)
            index_type = StoreDB.get_setting(conn, "index_type")
            fstring = fstring or StoreDB.get_setting(conn, "factory")
            ids, xb = StoreDB.all_vectors(conn, self._dim)
        gen = newest.gen if newest is not None else 0
        if fstring is None:
            return IndexView.empty(self._dim, self._config, None, None, seq=seq, gen=gen)
        index_type = _type_of(fstring) or index_type
        started = time.perf_counter()
        view = IndexView.build(ids, xb, dim=self._dim, config=self._config, index_type=index_type,
                               factory_string=fstring, seq=seq)
        view.gen = gen
        logger.info("built %s over %d vectors at seq %d in %.1f s", fstring, len(ids), seq,
                    time.perf_counter() - started)
        return view

    def _refresh(self) -> None:
        """Bring this process's view up to the log head: one cheap query when nothing changed."""
        head, gen = self._db.head_and_checkpoint()
        view = self._view
        if gen > view.gen and not self._reloading:
            self._on_new_checkpoint(view)
        if head > view.seq:
            with self._catch_up_lock:  # one thread at a time; the others wait, then find nothing to do
                current = self._view
                caught_up = self._caught_up(current)
                if caught_up is not current:
                    self._swap(caught_up)

    def _caught_up(self, view: IndexView) -> IndexView:
        """``view`` with the log after ``view.seq`` applied (O(1) per change), or a reloaded view when
        ``view`` is behind the pruned log or its index still has to be trained.  Caller holds the catch-up
        lock (or owns ``view`` alone)."""
        with self._db.snapshot() as conn:
            floor = int(StoreDB.get_setting(conn, "log_floor", 0))
            fstring = StoreDB.get_setting(conn, "factory")
            changes = StoreDB.changes_since(conn, view.seq, self._dim) if view.seq >= floor else None
        if changes is None:
            return self._reload_view_locked()
        if view.index is None and fstring is not None:  # a first add decided the index type
            decided = IndexView.empty(self._dim, self._config, _type_of(fstring), fstring, seq=view.seq,
                                      gen=view.gen)
            if not decided.is_trained:
                return self._reload_view_locked()
            view = decided
        if len(changes.add_ids) and not view.is_trained:
            return self._reload_view_locked()
        if len(changes) or changes.head != view.seq:
            with view.lock.write():
                view.apply(changes)
        return view

    def _reload_view_locked(self) -> IndexView:
        """Under the catch-up lock: the newest checkpoint, or (IVF without one) a trained view written as the
        first checkpoint by whichever process gets the checkpoint lock first."""
        with self._db.snapshot() as conn:
            has_checkpoint = StoreDB.checkpoint_row(conn) is not None
        if has_checkpoint:
            view = self._load_view_without_catch_up()
        else:
            with self._checkpoint_lock():
                with self._db.snapshot() as conn:
                    has_checkpoint = StoreDB.checkpoint_row(conn) is not None
                if has_checkpoint:
                    view = self._load_view_without_catch_up()
                else:
                    view = self._rebuild_view()
                    if view.index is not None and view.is_trained:
                        self._write_checkpoint(view, rebuilt=True)
        with self._db.snapshot() as conn:
            changes = StoreDB.changes_since(conn, view.seq, self._dim)
        if view.index is not None and view.is_trained:
            with view.lock.write():
                view.apply(changes)
        return view

    def _load_view_without_catch_up(self) -> IndexView:
        for _attempt in range(5):
            with self._db.snapshot() as conn:
                row = StoreDB.checkpoint_row(conn)
            try:
                return self._read_checkpoint(row)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, RuntimeError) as exc:
                logger.warning("checkpoint %s is unusable (%s); rebuilding from the database", row.file, exc)
                break
        return self._rebuild_view()

    def _swap(self, view: IndexView) -> None:
        old, self._view = self._view, view
        logger.info("index %s: view now at checkpoint %d, seq %d (was %d, seq %d)", self._directory, view.gen,
                    view.seq, old.gen, old.seq)

    def _on_new_checkpoint(self, view: IndexView) -> None:
        """Another process wrote a checkpoint.  A copy of a view changes nothing for this one (adopt its
        generation); a rebuilt one (fewer tombstones, another index type, a retrained IVF) is loaded."""
        with self._db.snapshot() as conn:
            row = StoreDB.checkpoint_row(conn)
        if row is None or row.gen <= view.gen:
            return
        if row.rebuilt or row.factory != view.factory:
            self._reload_in_background()
        else:
            view.gen = row.gen

    def _reload_in_background(self) -> None:
        """Another process wrote a newer checkpoint (e.g. a compaction): load it aside, then swap it in."""
        with self._reload_lock:
            if self._reloading:
                return
            self._reloading = True

        def reload() -> None:
            try:
                view = self._load_view_without_catch_up()
                with self._catch_up_lock:
                    with self._db.snapshot() as conn:
                        changes = StoreDB.changes_since(conn, view.seq, self._dim)
                    if view.index is not None and view.is_trained:
                        with view.lock.write():
                            view.apply(changes)
                    if view.gen > self._view.gen or view.seq >= self._view.seq:
                        self._swap(view)
            except Exception:  # noqa: BLE001 - keep serving the current view; the next read retries
                logger.exception("could not load the newer checkpoint of %s", self._directory)
            finally:
                self._reloading = False

        thread = threading.Thread(target=reload, name="simsearch-reload", daemon=True)
        thread.start()
        self._background = thread

    def wait_for_background(self, timeout: float | None = None) -> None:
        """Wait for a background reload or checkpoint of this process (tests and benchmarks use it)."""
        thread = self._background
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------ search
    def search(self, xq: np.ndarray, k: int, *, ef_search: int | None = None,
               nprobe: int | None = None) -> list[list[Neighbor]]:
        """The ``k`` nearest live items of each query ``xq: (nq, d) float32``, best first.

        Returns one list per query, shorter than ``k`` when the index holds fewer live items.
        ``ef_search`` (HNSW, raised to ``k`` if below) and ``nprobe`` (IVF) override the config defaults
        for this call.
        """
        xq = check_vectors(xq, self._dim, "xq")
        k = check_positive_int(k, "k")
        ef_search = check_positive_int(ef_search, "ef_search", allow_none=True) or self._config.ef_search
        nprobe = check_positive_int(nprobe, "nprobe", allow_none=True) or self._config.nprobe
        if self._config.normalize and len(xq):
            xq = normalized(xq, "xq")
        self._refresh()
        view = self._view
        with view.lock.read():
            D, I = view.search(xq, k, ef_search=ef_search, nprobe=nprobe)
        metas = self._db.items(np.unique(I[I >= 0]).tolist()) if I.size else {}
        results = []
        for dists, ids in zip(D.tolist(), I.tolist()):
            hits = []
            for sim, i in zip(dists, ids):
                meta = metas.get(i)
                if i < 0 or meta is None:  # deleted by a write that committed after this view was read
                    continue
                sim = min(max(sim, -1.0), 1.0)
                hits.append(Neighbor(i, sim, (1.0 + sim) / 2.0, meta.label, meta.path, meta.source))
            results.append(hits)
        return results

    # ------------------------------------------------------------------ items
    def get(self, item_id: int) -> ItemMeta | None:
        """Metadata of one live item, or None if the id is unknown or deleted."""
        return self._db.items([int(item_id)]).get(int(item_id))

    def label_counts(self) -> dict[str, int]:
        """Live items per label, sorted by label."""
        return self._db.label_counts()

    def random_ids(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``min(n, len(self))`` distinct live ids drawn with ``rng`` by seeking random points of the id range:
        each draw is one O(log n) lookup (an id after a gap of deleted ids is a little more likely)."""
        n = check_positive_int(n, "n")
        bounds = self._db.id_range()
        if bounds is None:
            return np.zeros(0, dtype=np.int64)
        want = min(n, len(self))
        picked: dict[int, None] = {}
        for _ in range(4 * n):
            found = self._db.id_after(int(rng.integers(bounds[0], bounds[1] + 1)))
            if found is not None:
                picked.setdefault(found)
            if len(picked) >= want:
                break
        # after long runs of deleted ids most draws land on the same few ids: take the rest by walking on
        # from a random point (each step finds a new id or one of the < want already picked; one wrap-around)
        cursor = int(rng.integers(bounds[0], bounds[1] + 1)) if len(picked) < want else bounds[0]
        for _ in range(2 * want + 1):
            if len(picked) >= want:
                break
            found = self._db.id_after(cursor)
            if found is None:
                cursor = bounds[0]
                continue
            picked.setdefault(found)
            cursor = found + 1
        return np.array(list(picked), dtype=np.int64)

    def iter_items(self) -> Iterator[ItemMeta]:
        """Every live item in id order."""
        return self._db.iter_items()

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids: (n,) int64, xb: (n, d) float32)`` of all live items sorted by id, as stored (normalised),
        from the truth (exact for every index type, IVF-PQ included)."""
        with self._db.snapshot() as conn:
            return StoreDB.all_vectors(conn, self._dim)

    def reconstruct(self, item_id: int) -> np.ndarray:
        """The stored vector of one live item, ``(d,) float32``."""
        vector = self._db.vectors([int(item_id)], self._dim).get(int(item_id))
        if vector is None:
            raise KeyError(f"no item with id {item_id}")
        return vector

    def paths_under(self, prefix: str) -> set[str]:
        """Paths of live items under ``prefix`` (a folder path ending in the separator)."""
        return self._db.paths_under(prefix)

    def stats(self) -> dict:
        """Counts (live items, stored vectors, tombstones, per label), index type, log and checkpoint state."""
        self._refresh()
        view = self._view
        with self._db.snapshot() as conn:
            head = StoreDB.head(conn)
            row = StoreDB.checkpoint_row(conn)
            floor = StoreDB.get_setting(conn, "log_floor", 0)
        checkpoint = None if row is None else {"gen": row.gen, "seq": row.seq, "file": row.file,
                                               "created_at": _iso(row.created_at)}
        return {"ntotal": view.live, "stored_vectors": view.stored, "tombstones": view.tombstone_count,
                "label_counts": self.label_counts(), "index_type": view.index_type, "factory": view.factory,
                "dim": self._dim, "metric": self._config.metric, "model": dict(self._settings["model"]),
                "config": self._config.to_dict(), "log_head": head, "log_floor": floor, "view_seq": view.seq,
                "checkpoint": checkpoint, "changes_since_checkpoint": head - (row.seq if row else 0),
                "created_at": self._settings["created_at"], "directory": self._directory}

    # ------------------------------------------------------------------ checkpoints and compaction
    @contextmanager
    def _checkpoint_lock(self, blocking: bool = True) -> Iterator[bool]:
        """An exclusive ``flock`` over the checkpoint files (a derived view, never the data: the data is
        ordered by SQLite).  Yields False when ``blocking`` is off and another process holds it."""
        path = os.path.join(self._directory, CHECKPOINT_DIR, CHECKPOINT_LOCK)
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

    def checkpoint(self) -> int:
        """Write this process's view as a new checkpoint (searches go on meanwhile); returns its generation."""
        with self._checkpoint_lock():
            self._refresh()
            with self._db.snapshot() as conn:
                newest = StoreDB.checkpoint_row(conn)
            if newest is not None and newest.seq >= self._view.seq:
                # nothing to add: the newest checkpoint already covers this view; still clear what a killed
                # checkpoint or compaction left behind (a half-written file can be as large as the index)
                self._remove_stale_checkpoint_files(os.path.join(self._directory, CHECKPOINT_DIR))
                return newest.gen
            return self._write_checkpoint(self._view)

    def _write_checkpoint(self, view: IndexView, rebuilt: bool = False) -> int:
        """Serialise ``view`` (under its read lock: a memory copy), write it aside, fsync, rename, then record
        it in SQLite (the commit point) and prune older checkpoints and the log they covered.  Caller holds
        the checkpoint lock."""
        if view.index is None:
            return 0
        with view.lock.read():
            blob, seq, tombstones = view.serialize(), view.seq, view.tombstones()
            stored = view.stored
        folder = os.path.join(self._directory, CHECKPOINT_DIR)
        name = f"view.{seq}.{uuid.uuid4().hex[:8]}.faiss"
        persist.write_file_atomic(os.path.join(folder, name), lambda tmp: blob.tofile(tmp))
        persist.fsync_dir(folder)
        with self._db.transaction() as conn:
            gen = StoreDB.record_checkpoint(conn, seq=seq, file=name, sha256=persist.sha256_bytes(blob),
                                            index_type=view.index_type, factory=view.factory, stored=stored,
                                            tombstones=tombstones, trained_on=view.trained_on, rebuilt=rebuilt)
            StoreDB.set_setting(conn, "index_type", view.index_type)
            StoreDB.set_setting(conn, "factory", view.factory)
            dropped, _floor = StoreDB.prune(conn)
        view.gen = gen
        self._remove_stale_checkpoint_files(folder)
        logger.info("checkpoint %d of %s at seq %d: %d vectors, %d tombstones, %.1f MB", gen, self._directory, seq,
                    stored, len(tombstones), blob.nbytes / 1e6)
        return gen

    def _remove_stale_checkpoint_files(self, folder: str) -> None:
        """Delete checkpoint files no row names (older generations, and leftovers of a crash mid-write);
        caller holds the checkpoint lock, so no other process is writing one."""
        named = {r[0] for r in self._db.query("SELECT file FROM checkpoints")}
        for name in os.listdir(folder):
            if name != CHECKPOINT_LOCK and name not in named:
                try:
                    os.remove(os.path.join(folder, name))
                except OSError as exc:  # harmless: the next checkpoint retries
                    logger.warning("could not remove stale checkpoint file %s: %s", name, exc)

    def compact(self, *, force: bool = False) -> CompactResult:
        """Write a new checkpoint.  Rebuild the FAISS index from the truth first when tombstones exceed
        ``config.compact_fraction`` of the stored vectors (any tombstone with ``force``), when an ``auto``
        index has outgrown its type, or when IVF has outgrown its training sample (4x); otherwise the
        current view is written as it is.  Searches continue meanwhile (in this and other processes)."""
        started = time.perf_counter()
        with self._checkpoint_lock():
            self._refresh()
            view = self._view
            reason = self._rebuild_reason(view, force)
            dropped = view.tombstone_count
            if reason:
                target = self._target_factory(view)
                fresh = self._rebuild_view(target)
                with self._catch_up_lock:
                    with self._db.snapshot() as conn:
                        changes = StoreDB.changes_since(conn, fresh.seq, self._dim)
                    with fresh.lock.write():
                        fresh.apply(changes)
                    self._swap(fresh)
                view = fresh
                dropped -= fresh.tombstone_count
            else:
                dropped = 0
            gen = self._write_checkpoint(view, rebuilt=bool(reason))
        return CompactResult(bool(reason), reason or "checkpoint only", gen, view.seq, dropped,
                             round(time.perf_counter() - started, 3))

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
        if self._config.index_type == "auto" and _type_of(self._target_factory(view)) != view.index_type:
            return f"{view.live} items outgrew {view.index_type}"
        if view.index_type == "ivfpq" and view.trained_on and view.live > 4 * view.trained_on:
            return f"IVF trained on {view.trained_on} vectors, now {view.live}"
        return ""

    def _maybe_checkpoint_in_background(self) -> None:
        """The automatic policy: after ``config.checkpoint_every`` changes since the newest checkpoint, or
        after ``config.checkpoint_interval_s`` with any change pending, checkpoint (compacting if due) in a
        background thread of whichever process notices first (the others skip: the lock is taken)."""
        if self._background is not None and self._background.is_alive():
            return
        head, _gen = self._db.head_and_checkpoint()
        with self._db.snapshot() as conn:
            row = StoreDB.checkpoint_row(conn)
        pending = head - (row.seq if row else 0)
        age = time.time() - (row.created_at if row else 0.0)
        if pending < self._config.checkpoint_every and not (pending and age >= self._config.checkpoint_interval_s):
            return

        def run() -> None:
            try:
                with self._checkpoint_lock(blocking=False) as got:
                    if not got:
                        return
                self.compact()
            except Exception:  # noqa: BLE001 - the log stays the truth; the next write tries again
                logger.exception("automatic checkpoint of %s failed", self._directory)

        thread = threading.Thread(target=run, name="simsearch-checkpoint", daemon=True)
        thread.start()
        self._background = thread

    def close(self) -> None:
        """Release the database connections (nothing is lost: every write was committed when it returned)."""
        self.wait_for_background()
        self._db.close()


def _check_settings(settings: dict, path: str) -> None:
    if settings.get("format") != FORMAT:
        raise IndexStoreError(f"{path} is not a simsearch index database")
    if settings.get("format_version") != FORMAT_VERSION:
        raise IndexStoreError(f"{path} has format version {settings.get('format_version')!r}; "
                              f"this simsearch reads version {FORMAT_VERSION}")
    for key in ("dim", "model", "config", "created_at"):
        if key not in settings:
            raise IndexStoreError(f"index database {path} lacks the setting {key!r}")


def _type_of(fstring: str | None) -> str | None:
    if fstring is None:
        return None
    if "HNSW" in fstring:
        return "hnsw"
    if fstring.startswith("IVF"):
        return "ivfpq"
    return "flat"


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

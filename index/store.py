"""``IndexStore``: an index directory whose truth is SQLite (WAL) and whose FAISS index is a view of it.

Layout of ``<index_dir>``::

    store.sqlite (+ -wal, -shm)     the truth: items with their vectors, the change log, settings, snapshots
    snapshots/view.<seq>.<id>.faiss   FAISS snapshots, each stamped (in SQLite) with the log seq it covers

Writes (:meth:`add`, :meth:`remove`) are one SQLite transaction each, durable when they return, O(1) in
the collection size, and safe from any number of threads and processes at once (SQLite orders them).
Reads (:meth:`search` and friends) first compare the log head with the view's seq (one cheap query) and
apply only the new entries, so a write acknowledged in one process is seen by the next search in every
other.  :meth:`snapshot` and :meth:`compact` write a new snapshot (compaction rebuilds the FAISS index
from the truth, dropping tombstones and retraining IVF); other processes switch to it in the background.

Scores: a neighbour's ``similarity`` is the inner product of L2-normalised vectors, i.e. the cosine in
[-1, 1] (exact for IVF-PQ too, whose candidates are re-ranked by their stored vectors unless ``rerank=0``);
``score = (1 + similarity) / 2``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from durablefile import atomic_path
from index import factory, persist
from index.base import CompactResult, ItemMeta, LogTail, Neighbor, ReplicaState, check_label_filter, check_labels
from index.arrays import check_count, check_ids, check_positive_int, check_strings, check_vectors, normalized
from index.config import IndexConfig, choose_index_type, expected_quality, setting_params
from index.db import DB_FILE, FORMAT, FORMAT_VERSION, UPGRADABLE_VERSIONS, StoreDB, db_path, default_busy_timeout_s
from index.descriptors import DescriptorSpace
from index.check import QUICK_CHECK_SQL, checked_at_open, quick_check_problems
from index.errors import IndexDamagedError, IndexStoreError, IndexSupersededError
from index.keeper import ViewKeeper, snapshot_folder
from index.label_filter import LabelFilter
from index.view import IndexView
from index.rerank import rerank as exact_rerank

logger = logging.getLogger(__name__)

LEGACY_MANIFEST = "manifest.json"  # the generation-file layout of simsearch <= 0.1 (see index.migrate)


def _now() -> str:
    return _iso(time.time())


class IndexStore:
    """Build with :meth:`create`, reopen with :meth:`open`; see the module docstring for the guarantees.

    One instance serves all the threads of a process; open one per process."""

    backend = "faiss-sqlite"

    def __init__(self, directory: str, db: StoreDB, settings: dict) -> None:
        self._directory = directory
        self._db = db
        self._settings = settings
        self._dim = int(settings["dim"])
        self._config = IndexConfig.from_dict(settings["config"])
        self._keeper = ViewKeeper(directory, db, self._dim, self._config)
        self._label_filter = LabelFilter(db, self._dim, self._config.exact_filter_max)
        second = settings.get("descriptor")
        self._descriptors = (DescriptorSpace(db, int(second["dim"]), second["model"], self._config)
                             if second else None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, directory: str | os.PathLike, dim: int, *, config: IndexConfig = IndexConfig(),
               model_info: dict, synchronous: str = "full", descriptor_model: dict | None = None) -> "IndexStore":
        """A new, empty index in ``directory`` (created if missing; must not already hold an index).
        ``model_info`` needs ``checkpoint_sha256``, ``embedding_dim`` (== ``dim``), ``metric`` and
        ``preprocess`` (a dict).  ``descriptor_model``: the same for a second model whose vector every item
        carries too (a copy descriptor, see :mod:`index.descriptors`).  The database appears atomically
        (written aside, then renamed)."""
        dim = check_positive_int(dim, "dim")
        if not isinstance(config, IndexConfig):
            raise ValueError(f"config must be an IndexConfig, got {type(config).__name__}")
        model = persist.validate_model_info(model_info, dim)
        descriptor = None
        if descriptor_model is not None:
            second_dim = check_positive_int(descriptor_model.get("embedding_dim"), "descriptor embedding_dim")
            descriptor = {"dim": second_dim, "model": persist.validate_model_info(descriptor_model, second_dim)}
        directory = os.fspath(directory)
        snapshot_folder(directory)
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
        if descriptor is not None:
            settings["descriptor"] = descriptor
        with atomic_path(db_path(directory)) as tmp:
            StoreDB.create(tmp, settings, synchronous=synchronous).close()
        return cls.open(directory, synchronous=synchronous)

    @classmethod
    def open(cls, directory: str | os.PathLike, *, expect_model: dict | None = None,
             synchronous: str = "full", busy_timeout_s: float | None = None) -> "IndexStore":
        """Open the index in ``directory``: load the newest snapshot and catch up with the log.

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
        busy_timeout_s = default_busy_timeout_s() if busy_timeout_s is None else busy_timeout_s
        db = StoreDB(db_path(directory), synchronous=synchronous, busy_timeout_s=busy_timeout_s)
        try:
            settings = db.settings()
            if settings.get("format") == FORMAT and settings.get("format_version") in UPGRADABLE_VERSIONS:
                snapshot_folder(directory)  # (2) checkpoints/ -> snapshots/ before the rows name files in it
                db.upgrade()
                settings = db.settings()
            _check_settings(settings, db.path)
            problems = quick_check_problems(db.query(QUICK_CHECK_SQL)) if checked_at_open(db.path) else []
            if problems:
                raise IndexDamagedError(f"index database {db.path} is damaged (quick_check: {'; '.join(problems[:3])});"
                                        f" see: simsearch index check {directory}")
            if expect_model is not None:
                persist.check_model(settings["model"], expect_model)
            store = cls(directory, db, settings)
        except BaseException:
            db.close()
            raise
        logger.info("opened index %s: %d items, %s, view at seq %d", directory, len(store), store.factory,
                    store._keeper.view.seq)
        return store

    # ------------------------------------------------------------------ properties
    @property
    def directory(self) -> str:
        return self._directory

    @property
    def location(self) -> str:
        return self._directory

    @property
    def home(self) -> str:
        """The folder of ``model.pt`` and uploads: for an index directory, the directory itself."""
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
        self._keeper.refresh()
        return self._keeper.view.index_type

    @property
    def factory(self) -> str | None:
        return self._keeper.view.factory

    @property
    def model_info(self) -> dict:
        return dict(self._settings["model"])

    @property
    def descriptors(self) -> DescriptorSpace | None:
        """The second vector of every item (a copy descriptor) and its search, or None for an index without."""
        return self._descriptors

    def __len__(self) -> int:
        self._keeper.refresh()
        return self._keeper.view.live

    def log_head(self) -> int:
        """The seq of the newest committed change (one cheap query)."""
        return self._db.head_and_snapshot()[0]

    # ------------------------------------------------------------------ writes
    def add(self, vectors: np.ndarray, *, labels: list[str], paths: list[str],
            sources: list[str] | None = None, descriptors: np.ndarray | None = None) -> np.ndarray:
        """Append ``vectors: (n, d) float32`` with their labels and paths in one durable transaction;
        returns their new ids, ``(n,) int64`` (never reused, even after deletes).  ``descriptors: (n, d2)
        float32``: each item's second vector, required by an index that keeps one (:attr:`descriptors`) and
        refused by one that does not."""
        xb = check_vectors(vectors, self._dim, "vectors")
        n = len(xb)
        labels = check_labels(check_strings(labels, n, "labels"))
        paths = check_strings(paths, n, "paths")
        sources = check_strings(sources, n, "sources", optional=True)
        xd = self._checked_descriptors(descriptors, n)
        if self._config.normalize and n:
            xb = normalized(xb, "vectors")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        with self._db.transaction() as conn:
            self._check_primary(conn)
            if StoreDB.get_setting(conn, "factory") is None:
                self._decide_index_type(conn, n)
            self._check_trainable(conn, n)
            ids = StoreDB.insert_items(conn, xb, labels, paths, sources, xd)
        self._after_commit()
        return ids

    def remove(self, ids: int | list[int] | np.ndarray) -> list[ItemMeta]:
        """Delete items by id in one durable transaction (unknown or already deleted ids are ignored);
        returns the items that were deleted.  Their vectors leave searches at once (tombstones) and the
        FAISS structure at the next compaction."""
        ids = check_ids(ids)
        if not len(ids):
            return []
        with self._db.transaction() as conn:
            self._check_primary(conn)
            gone = StoreDB.delete_items(conn, ids)
        if gone:
            self._after_commit()
        return gone

    def _checked_descriptors(self, descriptors: np.ndarray | None, n: int) -> np.ndarray | None:
        """``descriptors`` checked against the index's second vector, ``(n, d2) float32`` L2-normalised; None
        for an index without one.  ``ValueError`` when they are missing, unexpected or of the wrong shape."""
        space = self._descriptors
        if space is None:
            if descriptors is not None:
                raise ValueError(f"index {self._directory} keeps no second vector per item; pass no descriptors")
            return None
        if descriptors is None:
            raise ValueError(f"index {self._directory} keeps a {space.dim}-d copy descriptor per item; "
                             "pass descriptors (embedded with its copy model)")
        xd = check_vectors(descriptors, space.dim, "descriptors")
        if len(xd) != n:
            raise ValueError(f"{n} vectors but {len(xd)} descriptors")
        return normalized(xd, "descriptors") if n else xd

    def _check_primary(self, conn) -> None:
        """Refuse an ordinary write to a replica, inside the write's own transaction: a switch records the
        replica state in a transaction too, so every write either commits before it (and is carried over by
        the switch's last catch-up) or is refused."""
        state = ReplicaState.from_dict(StoreDB.get_setting(conn, "replica_of"))
        if state is not None:
            raise IndexSupersededError(self._directory, state.location)

    # ------------------------------------------------------------------ replication (engine.lifecycle)
    def replica_state(self) -> ReplicaState | None:
        with self._db.read_transaction() as conn:
            return ReplicaState.from_dict(StoreDB.get_setting(conn, "replica_of"))

    def set_replica_state(self, state: ReplicaState | None) -> None:
        with self._db.transaction() as conn:
            StoreDB.set_setting(conn, "replica_of", None if state is None else state.to_dict())

    def replicate(self, vectors: np.ndarray, items: list[ItemMeta], *, deleted=(),
                  state: ReplicaState | None = None, descriptors: np.ndarray | None = None) -> tuple[int, int]:
        """Add ``items`` under their own ids with ``vectors: (n, d) float32`` (and ``descriptors``, as
        :meth:`add`; ids already present are skipped), delete ``deleted`` and record ``state`` (if given), in one
        durable transaction that a replica accepts."""
        xb = check_vectors(vectors, self._dim, "vectors") if len(items) else np.zeros((0, self._dim), np.float32)
        if len(xb) != len(items):
            raise ValueError(f"{len(items)} items but {len(xb)} vectors")
        xd = self._checked_descriptors(descriptors, len(items)) if len(items) else None
        check_labels([item.label for item in items])
        if self._config.normalize and len(xb):
            xb = normalized(xb, "vectors")
        deleted = check_ids(list(deleted)) if len(deleted) else np.zeros(0, np.int64)
        with self._db.transaction() as conn:
            if items and StoreDB.get_setting(conn, "factory") is None:
                self._decide_index_type(conn, max(len(items), self._config.expected_size or 0))
            added = StoreDB.insert_replicated(conn, xb, items, xd)
            gone = StoreDB.delete_items(conn, deleted) if len(deleted) else []
            if state is not None:
                StoreDB.set_setting(conn, "replica_of", state.to_dict())
        if added or gone:
            self._after_commit()
        return added, len(gone)

    def log_tail(self, seq: int) -> LogTail | None:
        """The changes after log position ``seq`` (None when compaction pruned the log past it)."""
        with self._db.read_transaction() as conn:
            tail = StoreDB.log_tail(conn, seq)
            if tail is None:
                return None
            head, added, deleted = tail
            metas = StoreDB.get_items(conn, added)
        return LogTail(head, [metas[i] for i in added if i in metas], deleted)

    def live_ids(self) -> np.ndarray:
        """Every live id, ``(n,) int64`` in order."""
        return self._db.live_ids()

    def _after_commit(self) -> None:
        """Catch this process's view up and apply the snapshot policy.  The write is durable already: a
        failure here is logged, never reported as a failed write (the next read catches up again)."""
        try:
            self._keeper.after_write()
        except Exception:  # noqa: BLE001 - see the docstring
            logger.exception("index %s: the write committed, but updating this process's view failed",
                             self._directory)

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
        fstring = StoreDB.get_setting(conn, "factory")
        if not fstring.startswith("IVF") or conn.execute("SELECT 1 FROM snapshots LIMIT 1").fetchone():
            return  # only IVF trains, and a snapshot means it has been trained
        need = factory.training_need(factory.new_index(fstring, self._dim, self._config), self._config)
        have = StoreDB.live_count(conn) if need else 0
        if need and have + n < need:
            raise ValueError(f"an IVF-PQ index needs at least {need} vectors to train, got {have + n}; "
                             "add a larger first batch or use index_type='flat'/'hnsw'")

    # ------------------------------------------------------------------ search
    def search(self, xq: np.ndarray, k: int, *, ef_search: int | None = None, nprobe: int | None = None,
               label: str | None = None, rerank: int | None = None) -> list[list[Neighbor]]:
        """The ``k`` nearest live items of each query ``xq: (nq, d) float32``, best first.

        Returns one list per query, shorter than ``k`` when the index holds fewer live items.
        ``ef_search`` (HNSW, raised to ``k`` if below) and ``nprobe`` (IVF) override the config defaults
        for this call, and so does ``rerank`` (IVF-PQ: candidates re-ranked by their exact vectors, 0 for none).
        ``label``: only items with this label, ``k`` of them whenever the label has as many (see
        :mod:`index.label_filter`: exact over the class up to ``config.exact_filter_max`` items, else an
        ``IDSelector`` inside the FAISS search).  Every search sees every committed write: catching up with the
        log first is one cheap query.
        """
        xq = check_vectors(xq, self._dim, "xq")
        k = check_positive_int(k, "k")
        ef_search = check_positive_int(ef_search, "ef_search", allow_none=True) or self._config.ef_search
        nprobe = check_positive_int(nprobe, "nprobe", allow_none=True) or self._config.nprobe
        label = check_label_filter(label)
        rerank = self._config.rerank if rerank is None else check_count(rerank, "rerank")
        if self._config.normalize and len(xq):
            xq = normalized(xq, "xq")
        self._keeper.refresh()
        view = self._keeper.view
        if label is None:
            depth = view.rerank_depth(k, rerank)
            with view.lock.read():
                D, I = view.search(xq, depth or k, ef_search=ef_search, nprobe=nprobe)
            if depth:  # compressed codes: order the candidates by their exact vectors from the truth
                D, I = exact_rerank(xq, I, lambda ids: self._db.vectors_of(ids, self._dim), k)
        else:
            D, I = self._label_filter.search(view, xq, k, label, ef_search=ef_search, nprobe=nprobe, rerank=rerank)
        metas = self._db.items(np.unique(I[I >= 0]).tolist()) if I.size else {}
        results = []
        for dists, ids in zip(D.tolist(), I.tolist()):
            hits = []
            for sim, i in zip(dists, ids):
                meta = metas.get(i)
                if i < 0 or meta is None:  # deleted by a write that committed after this view was read
                    continue
                hits.append(Neighbor.of(i, sim, meta))
            results.append(hits)
        return results

    # ------------------------------------------------------------------ items
    def get(self, item_id: int) -> ItemMeta | None:
        """Metadata of one live item, or None if the id is unknown or deleted."""
        return self.get_many([item_id]).get(int(item_id))

    def get_many(self, ids) -> dict[int, ItemMeta]:
        """Metadata of the live items among ``ids``, keyed by id (one query per 900 ids)."""
        return self._db.items([int(i) for i in ids])

    def label_counts(self) -> dict[str, int]:
        """Live items per label, sorted by label."""
        return self._db.label_counts()

    def random_ids(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``min(n, len(self))`` distinct live ids drawn with ``rng`` (:meth:`StoreDB.random_ids`)."""
        return self._db.random_ids(check_positive_int(n, "n"), rng, len(self))

    def iter_items(self) -> Iterator[ItemMeta]:
        """Every live item in id order."""
        return self._db.iter_items()

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids: (n,) int64, xb: (n, d) float32)`` of all live items sorted by id, as stored (normalised),
        from the truth (exact for every index type, IVF-PQ included)."""
        with self._db.read_transaction() as conn:
            return StoreDB.all_vectors(conn, self._dim)

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every live item as chunks ``(ids (c,) int64, xb (c, d) float32)`` in id order, from the truth, one
        chunk in memory at a time (:meth:`StoreDB.vector_pages`)."""
        return self._db.vector_pages(self._dim, batch)

    def vectors(self, ids) -> dict[int, np.ndarray]:
        """The stored vectors (normalised) of the live items among ``ids``, keyed by id, from the truth."""
        return self._db.vectors([int(i) for i in ids], self._dim)

    def reconstruct(self, item_id: int) -> np.ndarray:
        """The stored vector of one live item, ``(d,) float32``."""
        vector = self._db.vectors([int(item_id)], self._dim).get(int(item_id))
        if vector is None:
            raise KeyError(f"no item with id {item_id}")
        return vector

    def stats(self) -> dict:
        """Counts (live items, stored vectors, tombstones, per label), index type, log and snapshot state."""
        self._keeper.refresh()
        view = self._keeper.view
        with self._db.read_transaction() as conn:
            head = StoreDB.head(conn)
            row = StoreDB.snapshot_row(conn)
            floor = StoreDB.get_setting(conn, "log_floor", 0)
            replica = StoreDB.get_setting(conn, "replica_of")
        snapshot = None if row is None else {"gen": row.gen, "seq": row.seq, "file": row.file,
                                               "created_at": _iso(row.created_at), "lineage": row.lineage}
        due = self._keeper.rebuild_due()
        return {"backend": self.backend, "ntotal": view.live, "stored_vectors": view.stored, "tombstones": view.tombstone_count,
                "label_counts": self.label_counts(), "index_type": view.index_type, "factory": view.factory,
                "dim": self._dim, "metric": self._config.metric, "model": dict(self._settings["model"]),
                "config": self._config.to_dict(), "log_head": head, "log_floor": floor, "view_seq": view.seq,
                "snapshot": snapshot, "changes_since_snapshot": head - (row.seq if row else 0),
                "created_at": self._settings["created_at"], "directory": self._directory,
                "replica_of": replica, "compaction_due": bool(due), "compaction_reason": due or None,
                "descriptors": None if self._descriptors is None else self._descriptors.stats(),
                **self._quality(view)}

    def _quality(self, view: IndexView) -> dict:
        """The index type's search settings, its resident bytes per vector, and the recall@10 the benchmark
        measured for that setting near this size (:mod:`index.recall_table`; None: not measured)."""
        if view.index_type is None:
            return {"index_params": None, "bytes_per_vector": None, "expected_recall": None}
        quality = expected_quality(view.index_type, max(view.live, 1), self._dim, self._config)
        return {"index_params": setting_params(view.index_type, self._dim, self._config),
                "bytes_per_vector": view.bytes_per_vector,
                "expected_recall": None if quality is None else quality.to_dict()}

    # ------------------------------------------------------------------ snapshots and compaction
    def snapshot(self) -> int:
        """Write this process's view as a new snapshot (searches go on meanwhile); returns its generation.
        Does nothing new when the newest snapshot already covers the view."""
        return self._keeper.snapshot()

    def compact(self, *, force: bool = False) -> CompactResult:
        """Write a new snapshot, rebuilding the FAISS index from the truth first when it is due (see
        :meth:`ViewKeeper.compact`); searches continue meanwhile, here and in other processes.  Then give
        the database's free pages back to the file system (:meth:`StoreDB.reclaim_space`; with ``force``, a
        database made before format 4 is rewritten once so that it can)."""
        result = self._keeper.compact(force=force)
        return replace(result, reclaimed_bytes=self._db.reclaim_space(rewrite=force))

    def compaction_reason(self) -> str:
        """Why :meth:`compact` would rebuild the FAISS view now ("" when it would only snapshot): the
        automatic policy never rebuilds a large view in a serving process, so a cron job or timer runs
        ``simsearch index compact`` when this says so."""
        return self._keeper.rebuild_due()

    def wait_for_background(self, timeout: float | None = None) -> None:
        """Wait for this process's background reloads and snapshots (tests and benchmarks use it)."""
        self._keeper.wait_for_background(timeout)

    def close(self) -> None:
        """Release the database connections (nothing is lost: every write was committed when it returned)."""
        self._keeper.close()
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


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

"""A model's life behind a live server: re-embed an index with a new checkpoint into a *replica* while the old
index serves, catch the replica up with the writes made meanwhile, switch an alias to it, and roll back.

The replica holds the same items as its source (ids, labels, paths, times), each embedded by the new model.
Its replica state (:class:`index.ReplicaState`) names the source and the source's log position it holds; a
replica takes no ordinary writes, so no id is ever taken twice.  A catch-up round applies the source's log
after that position (or, for a source without a log, the difference of the two id sets), embedding each new
item's image file with the replica's model, and records the new position in the same step.

A switch (:func:`switch`) makes the source refuse writes first (it becomes a replica of the new index, in a
transaction every write also takes), runs a last catch-up, then makes the new index primary and points the
alias at it.  Every write therefore either committed before the source was sealed, and is carried over, or
was refused, and a server following the alias retries it on the new index (:mod:`engine.live`).  The old index
stays a replica of the new one: a rollback is the same switch the other way, replaying the writes made since.
Each step is durable and the whole is idempotent: a switch or a re-embed killed at any point is finished by
running it again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace

import numpy as np

from durablefile import atomic_path, fsync_dir
from engine.build import checkpoint_for, index_model_info
from engine.layout import COPY_MODEL_FILE, MODEL_FILE, UPLOADS_DIR
from index import IndexStoreError, ItemMeta, Maintainable, ReplicaState, VectorStore
from index.alias import AliasEntry, create_alias, open_alias, previous_target
from index.location import create_store, default_home, is_milvus, open_store, parse_location
from index.persist import check_model
from similarity.checkpoint import load_checkpoint
from similarity.data import SkippedFile
from similarity.embedder import ImageEmbedder
from similarity.runtime import EmbedRuntime, load_embedder

logger = logging.getLogger(__name__)

CHUNK = 4096  # items embedded and committed per step (a killed re-embed loses at most one step)
MILVUS_SWEEP_S = 5.0  # after a switch away from Milvus, wait this long and sweep once more (see switch)


@dataclass
class SyncSummary:
    """What one or more catch-up rounds did: items added and deleted, files that could not be embedded."""

    added: int = 0
    deleted: int = 0
    rounds: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)

    def merge(self, other: "SyncSummary") -> "SyncSummary":
        return SyncSummary(self.added + other.added, self.deleted + other.deleted, self.rounds + other.rounds,
                           self.skipped + other.skipped)


@dataclass
class ReembedSummary:
    source: str
    index: str
    copied: int
    resumed: bool
    catch_up: SyncSummary
    seconds: float
    items: int


def location_key(location: str | os.PathLike) -> str:
    """The one spelling of a location that replica states and aliases record: an absolute directory, or a
    Milvus location as :attr:`MilvusLocation.display` writes it."""
    parsed = parse_location(os.fspath(location))
    return os.path.abspath(os.fspath(location)) if parsed is None else parsed.display


def open_concrete(location: str | os.PathLike) -> VectorStore:
    """Open the index ``location`` names (the target, for an alias) under its :func:`location_key`."""
    from index.alias import resolve

    return open_store(location_key(resolve(location)))


class Replicator:
    """Carries a source store's items into a replica, embedding each image with the replica's model."""

    def __init__(self, source: VectorStore, replica: VectorStore, embedder: ImageEmbedder, *, batch_size: int = 256,
                 num_workers: int = 0) -> None:
        self.source = source
        self.replica = replica
        self.embedder = embedder
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.source_key = location_key(source.location)
        self._uploads_from = os.path.realpath(os.path.join(source.home, UPLOADS_DIR))
        self._uploads_to = os.path.join(os.path.abspath(replica.home), UPLOADS_DIR)
        self._failed: set[int] = set()  # ids whose file could not be embedded (not retried in this run)
        self.skipped: list[SkippedFile] = []  # those files, with why

    # ------------------------------------------------------------------ steps
    def add(self, items: list[ItemMeta], *, deleted=(), state: ReplicaState | None = None) -> SyncSummary:
        """Embed ``items`` (their files carried into the replica's uploads when they are the source's uploads)
        and apply them with ``deleted`` and ``state`` in one replica step."""
        items = [m for m in items if m.id not in self._failed]
        paths = [self._carry(m.path) for m in items]
        if items:
            result = self.embedder.embed_data(paths, batch_size=self.batch_size, num_workers=self.num_workers,
                                              progress=False)
            kept = [int(i) for i in result.kept]
            vectors = result.embeddings
            for skip in result.skipped:
                logger.warning("re-embed: %s: %s (the item is left out of %s)", skip.path, skip.reason,
                               self.replica.location)
            skipped = list(result.skipped)
            self.skipped.extend(skipped)
            self._failed.update(items[i].id for i in set(range(len(items))) - set(kept))
        else:
            kept, vectors, skipped = [], np.zeros((0, self.replica.dim), np.float32), []
        descriptors = None
        if self.replica.descriptors is not None:  # the copy descriptors are the same model's: carried, not re-run
            have = self.source.descriptors.vectors([items[i].id for i in kept])
            rows = [row for row, i in enumerate(kept) if items[i].id in have]  # else deleted meanwhile
            kept, vectors = [kept[row] for row in rows], vectors[rows]
            descriptors = np.stack([have[items[i].id] for i in kept]) if kept else None
        carried = [replace(items[i], path=paths[i]) for i in kept]
        added, gone = self.replica.replicate(vectors, carried, deleted=list(deleted), state=state,
                                             descriptors=descriptors)
        return SyncSummary(added, gone, 1, skipped)

    def copy_all(self, *, chunk: int = CHUNK, progress: bool = True) -> int:
        """The first pass: every source item above the replica's highest id, ``chunk`` at a time."""
        from tqdm import tqdm

        present = self.replica.live_ids()
        start = int(present[-1]) if len(present) else -1
        copied = 0
        batch: list[ItemMeta] = []
        with tqdm(total=len(self.source), initial=len(present), unit="img", desc="re-embed",
                  disable=not progress) as bar:
            for item in self.source.iter_items():
                if item.id <= start:
                    continue
                batch.append(item)
                if len(batch) >= chunk:
                    copied += self.add(batch).added
                    bar.update(len(batch))
                    batch = []
            if batch:
                copied += self.add(batch).added
                bar.update(len(batch))
        return copied

    def catch_up_round(self) -> SyncSummary:
        """Apply what the source changed since the replica's recorded position, and record the new one."""
        state = self.replica.replica_state()
        if state is None or location_key(state.location) != self.source_key:
            raise IndexStoreError(f"{self.replica.location} is not a replica of {self.source.location}")
        tail = self.source.log_tail(state.seq) if state.seq is not None else None
        if tail is not None:
            head, candidates, deleted = tail.head, tail.added, tail.deleted
            have = self.replica.get_many([m.id for m in candidates])
            todo = [m for m in candidates if m.id not in have]
        else:  # no log (Milvus), or pruned past the position: compare the id sets
            head = _head(self.source)
            source_ids, replica_ids = self.source.live_ids(), self.replica.live_ids()
            missing = np.setdiff1d(source_ids, replica_ids, assume_unique=True)
            deleted = np.setdiff1d(replica_ids, source_ids, assume_unique=True).tolist()
            found = self.source.get_many(missing)
            todo = [found[int(i)] for i in missing if int(i) in found]
        summary = SyncSummary(rounds=0)
        for start in range(0, max(len(todo), 1), CHUNK):
            last = start + CHUNK >= len(todo)
            step = self.add(todo[start:start + CHUNK], deleted=deleted if last else (),
                            state=ReplicaState(self.source_key, head) if last else None)
            summary = summary.merge(step)
        summary.rounds = 1
        return summary

    def catch_up(self, *, max_rounds: int = 20) -> SyncSummary:
        """Rounds until one finds nothing left to do (or ``max_rounds``)."""
        total = SyncSummary()
        for _ in range(max_rounds):
            step = self.catch_up_round()
            total = total.merge(step)
            if step.added == 0 and step.deleted == 0:
                break
        return total

    # ------------------------------------------------------------------ files
    def _carry(self, path: str) -> str:
        """An upload of the source as a file of the replica's own ``uploads/`` (a hard link, else a copy), so
        that deleting the item in one index never removes the other's file; other paths are kept."""
        if os.path.realpath(os.path.dirname(path)) != self._uploads_from:
            return path
        target = os.path.join(self._uploads_to, os.path.basename(path))
        if os.path.exists(target):
            return target
        try:
            os.makedirs(self._uploads_to, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                with atomic_path(target) as tmp:
                    shutil.copyfile(path, tmp)
            fsync_dir(self._uploads_to)
        except FileNotFoundError:
            return path  # deleted meanwhile: the item is gone too, or it is skipped as unreadable
        return target


def reembed(source: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike, *,
            runtime: EmbedRuntime = EmbedRuntime(), batch_size: int = 256, num_workers: int = 0,
            home: str | os.PathLike | None = None, index_type: str | None = None, progress: bool = True,
            chunk: int = CHUNK) -> ReembedSummary:
    """Build ``out``, a replica of the index ``source`` (or of an alias's target) whose vectors come from
    ``checkpoint``, while ``source`` keeps serving; then catch it up until the two are level.  Rerun after a
    kill, it resumes where it stopped."""
    if chunk < 1 or batch_size < 1:
        raise ValueError(f"chunk and batch_size must be positive, got {chunk} and {batch_size}")
    started = time.perf_counter()
    src = open_concrete(source)
    try:
        source_key = location_key(src.location)
        if location_key(out) == source_key:
            raise ValueError("the re-embedded index needs a location of its own (--out)")
        ckpt = load_checkpoint(checkpoint)
        dst, resumed = _open_or_create_replica(src, source_key, os.fspath(checkpoint), ckpt, out, home=home,
                                               index_type=index_type)
        try:  # the copy in the new index's home: an ONNX export lands beside it, where servers look
            embedder = load_embedder(checkpoint_for(dst.home), runtime)
            replicator = Replicator(src, dst, embedder, batch_size=batch_size, num_workers=num_workers)
            copied = replicator.copy_all(chunk=chunk, progress=progress)
            caught = replicator.catch_up()
            caught.skipped = list(replicator.skipped)
            summary = ReembedSummary(source_key, location_key(dst.location), copied, resumed, caught,
                                     time.perf_counter() - started, len(dst))
            if isinstance(dst, Maintainable):
                dst.snapshot()  # open loads the FAISS index instead of replaying the log
            elif hasattr(dst, "flush"):
                dst.flush()
            return summary
        finally:
            dst.close()
    finally:
        src.close()


def _open_or_create_replica(src: VectorStore, source_key: str, checkpoint_path: str, ckpt, out, *, home,
                            index_type: str | None) -> tuple[VectorStore, bool]:
    """The replica at ``out``: reopened when a killed re-embed left it (same source, same model), else created
    with the checkpoint as its ``model.pt`` and its replica state set to the source's log head of now."""
    model_info = index_model_info(ckpt)
    out = os.fspath(out)
    milvus = is_milvus(out)
    exists = _index_exists(out)
    if exists:
        dst = open_store(out)
        try:
            state = dst.replica_state()
            if state is None and len(dst) == 0:  # killed between creating it and recording its state
                dst.set_replica_state(ReplicaState(source_key, _head(src)))
                state = dst.replica_state()
            if state is None or location_key(state.location) != source_key:
                raise FileExistsError(f"{out} already holds an index that is not a re-embed of {source_key}; "
                                      "pick another --out")
            check_model(dst.model_info, model_info)
        except BaseException:
            dst.close()
            raise
        logger.info("resuming the re-embed of %s into %s (%d items there)", source_key, out, len(dst))
        return dst, True
    home_dir = os.fspath(home) if (home and milvus) else default_home(out)
    if not milvus and os.path.isdir(home_dir) and os.listdir(home_dir):
        raise FileExistsError(f"{home_dir} exists and is not empty; choose a new directory or delete it")
    os.makedirs(home_dir, exist_ok=True)
    with atomic_path(os.path.join(home_dir, MODEL_FILE)) as tmp:
        shutil.copyfile(checkpoint_path, tmp)
    descriptor_model = None
    if src.descriptors is not None and not milvus:  # the copy descriptors go along (a Milvus replica keeps none)
        descriptor_model = src.descriptors.model_info
        with atomic_path(os.path.join(home_dir, COPY_MODEL_FILE)) as tmp:
            shutil.copyfile(os.path.join(src.home, COPY_MODEL_FILE), tmp)
    elif src.descriptors is not None:
        logger.warning("%s keeps a copy descriptor per item; the Milvus replica %s keeps one vector per item and "
                       "finds duplicates with its class model", source_key, out)
    head = _head(src)  # before the first item is read: every later change is in the log after it
    config = replace(src.config, expected_size=max(1, len(src)),
                     index_type=index_type or src.index_type or src.config.index_type)
    dst = create_store(out, ckpt.config.model.embedding_dim, config=config, model_info=model_info,
                       home=home_dir if milvus else None, descriptor_model=descriptor_model)
    dst.set_replica_state(ReplicaState(source_key, head))
    return dst, False


def _index_exists(location: str) -> bool:
    parsed = parse_location(location)
    if parsed is None:
        from index.db import db_path

        return os.path.isfile(db_path(location))
    from index.milvus import MilvusStore

    return MilvusStore.exists(parsed)


def _head(store: VectorStore) -> int | None:
    """The store's log head, or None for a store without a log of its own (Milvus)."""
    return store.log_head() if isinstance(store, Maintainable) else None


# ---------------------------------------------------------------------- aliases
@dataclass
class SwitchResult:
    alias: str
    previous: str | None
    target: str
    caught_up: SyncSummary
    entry: AliasEntry | None
    seconds: float


def switch(alias_location: str | os.PathLike, target: str | os.PathLike | None = None, *, previous: bool = False,
           force: bool = False, note: str = "", runtime: EmbedRuntime = EmbedRuntime(),
           sweep_s: float = MILVUS_SWEEP_S) -> SwitchResult:
    """Point the alias at ``target`` (or, with ``previous``, at the target before the current one).

    When the alias already names an index, ``target`` must be its replica (made by :func:`reembed`, or the
    previous target after a switch): the current index is sealed, the target caught up, made primary and
    named, so no write is lost.  ``force`` switches to an unrelated index (writes made to the current one are
    then not carried over) and overrides an evaluation that found the target worse."""
    started = time.perf_counter()
    alias = open_alias(alias_location)
    if alias is None and previous:
        raise IndexStoreError(f"{os.fspath(alias_location)} is not an alias")
    if previous:
        target = previous_target(alias)
        if target is None:
            raise IndexStoreError(f"alias {alias.location} has no previous target to go back to")
    if target is None:
        raise ValueError("name the index to switch to, or pass --previous")
    target_key = location_key(target)
    if open_alias(target_key) is not None:
        raise ValueError(f"{target_key} is an alias: an alias names an index, not another alias")
    if alias is None or alias.target() is None:
        return _first_target(alias, alias_location, target_key, note, force, started)
    current = alias.target()
    if location_key(current) == target_key:
        alias.close()
        return SwitchResult(alias.location, current, target_key, SyncSummary(), None, time.perf_counter() - started)
    new = open_store(target_key)
    try:
        state = new.replica_state()
        if state is None or location_key(state.location) != location_key(current):
            if not force:
                raise IndexStoreError(f"{target_key} is not a replica of {current}, the alias's index: writes made to "
                                      f"{current} would not be in it. Make it with: simsearch index reembed "
                                      f"{alias.location} --checkpoint NEW.pt --out {target_key}; or pass --force")
            entry = alias.set(target_key, note=note or "forced: not a replica", forced=True)
            return SwitchResult(alias.location, current, target_key, SyncSummary(), entry,
                                time.perf_counter() - started)
        cur = open_store(location_key(current))
        try:
            if not (force or previous):
                _check_evaluation(new, cur)
            caught, level_ids = _seal_and_catch_up(cur, new, runtime)
            entry = alias.set(target_key, note=note or ("rollback" if previous else "switch"), forced=force)
            logger.info("alias %s: %s -> %s", alias.location, current, target_key)
            if level_ids is not None and sweep_s > 0:
                time.sleep(sweep_s)
                caught = caught.merge(_sweep(cur, new, level_ids, runtime))
        finally:
            cur.close()
        return SwitchResult(alias.location, current, target_key, caught, entry, time.perf_counter() - started)
    finally:
        new.close()
        alias.close()


def _first_target(alias, alias_location, target_key: str, note: str, force: bool, started: float) -> SwitchResult:
    """A new alias, or one never set: it names ``target_key``, which must be a primary index."""
    store = open_store(target_key)
    try:
        state = store.replica_state()
    finally:
        store.close()
    if state is not None:
        raise IndexStoreError(f"{target_key} is a replica of {state.location}: point an alias at that index first, "
                              "then switch it to this one")
    alias = alias or create_alias(alias_location, target_key)  # a Milvus alias is born pointing at its target
    try:
        entry = (alias.set(target_key, note=note or "first target", forced=force) if alias.target() is None
                 else alias.history()[-1])
        return SwitchResult(alias.location, None, target_key, SyncSummary(), entry, time.perf_counter() - started)
    finally:
        alias.close()


def _replicator(source: VectorStore, replica: VectorStore, runtime: EmbedRuntime) -> Replicator:
    """A replicator that embeds with the replica's own ``model.pt``."""
    return Replicator(source, replica, load_embedder(checkpoint_for(replica.home), runtime))


def _seal_and_catch_up(cur: VectorStore, new: VectorStore, runtime: EmbedRuntime
                       ) -> tuple[SyncSummary, np.ndarray | None]:
    """Seal ``cur`` (a replica of ``new`` from now on: writes to it are refused), catch ``new`` up with it, then
    record ``new``'s log position in ``cur`` and make ``new`` primary.  Returns what the catch-up did and, for
    a store whose replica check is not transactional (Milvus), ``cur``'s ids at the end (see :func:`_sweep`)."""
    new_key = location_key(new.location)
    state = cur.replica_state()
    if state is None:
        cur.set_replica_state(ReplicaState(new_key, None))
    elif location_key(state.location) != new_key:
        raise IndexStoreError(f"{cur.location} is a replica of {state.location}, not of {new_key}")
    caught = _replicator(cur, new, runtime).catch_up()
    level_ids = cur.live_ids() if is_milvus(cur.location) else None
    cur.set_replica_state(ReplicaState(new_key, _head(new)))
    new.set_replica_state(None)
    return caught, level_ids


def _sweep(cur: VectorStore, new: VectorStore, level_ids: np.ndarray, runtime: EmbedRuntime) -> SyncSummary:
    """Carry into ``new`` the writes that reached ``cur`` after the last catch-up: a Milvus write checks the
    replica state and then writes, not in one transaction, so one that checked just before the seal may land a
    moment after it.  ``level_ids``: ``cur``'s ids when the two were level."""
    now = cur.live_ids()
    added = np.setdiff1d(now, level_ids, assume_unique=True)
    deleted = np.setdiff1d(level_ids, now, assume_unique=True).tolist()
    if not len(added) and not deleted:
        return SyncSummary()
    found = cur.get_many(added)
    logger.warning("switch: %d add(s) and %d delete(s) reached %s after it was sealed; carried into %s",
                   len(found), len(deleted), cur.location, new.location)
    return _replicator(cur, new, runtime).add([found[int(i)] for i in added if int(i) in found], deleted=deleted)


def _check_evaluation(new: VectorStore, cur: VectorStore) -> None:
    """Refuse a switch that ``simsearch evaluate`` found worse than the index in use."""
    from engine.evaluate import recorded_verdict

    found = recorded_verdict(new.home, cur.model_info["checkpoint_sha256"])
    if found is not None and found.get("verdict") == "worse":
        raise IndexStoreError(f"simsearch evaluate found {new.location} worse than {cur.location} "
                              f"({found.get('verdict_reason') or 'see its evaluation report'}); pass --force to "
                              "switch anyway")


def alias_status(location: str | os.PathLike) -> dict:
    """What ``simsearch alias show`` prints: the target, the previous one, and each one's items and state."""
    alias = open_alias(location)
    if alias is None:
        raise IndexStoreError(f"{os.fspath(location)} is not an alias")
    try:
        entries = alias.history()
        out = {"alias": alias.location, "target": entries[-1].target if entries else None,
               "previous": previous_target(alias), "switches": len(entries), "indexes": {}}
        for name in (out["target"], out["previous"]):
            if name is None:
                continue
            try:
                store = open_store(name)
            except IndexStoreError as exc:
                out["indexes"][name] = {"error": str(exc)}
                continue
            try:
                state = store.replica_state()
                out["indexes"][name] = {"items": len(store), "model": store.model_info["checkpoint_sha256"],
                                        "replica_of": None if state is None else state.to_dict()}
            finally:
                store.close()
        return out
    finally:
        alias.close()

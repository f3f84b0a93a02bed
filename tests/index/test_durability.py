"""What survives: killed processes, writers in several processes, snapshots, compaction, damaged files,
and the model-compatibility guard.  Child processes are real (``sys.executable -c``) and killed with SIGKILL."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import numpy as np
import pytest

from index import IndexConfig, IndexMismatchError, IndexStore, IndexStoreError
from index.arrays import normalized
from index.db import db_path
from tests.index.conftest import (CONFIGS, DIM, Child, add_items, exact_ids, ids_of, live_ids, manual,
                                  model_info, vectors)

BATCH = 10

# Adds batches of BATCH random vectors, or deletes batches of BATCH random live ids, printing "- ids" before
# a delete and "+ ids" once a write returned (acknowledged).  argv: directory, mode, seed, batches (0: no end),
# go (a file to wait for before writing, after printing "ready"; or "-").
_WRITER = f"""
import os, sys, time
import numpy as np
from index import IndexStore
directory, mode, seed, batches, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
store = IndexStore.open(directory)
rng = np.random.default_rng(seed)
victims = rng.permutation([m.id for m in store.iter_items()]).tolist() if mode == "delete" else []
if go != "-":
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.002)
for _ in range(batches or 10**9):
    if mode == "add":
        x = rng.standard_normal(({BATCH}, {DIM})).astype(np.float32)
        ids = store.add(x, labels=["w%d" % seed] * {BATCH}, paths=["p"] * {BATCH}).tolist()
    else:
        batch, victims = victims[:{BATCH}], victims[{BATCH}:]
        print("-", *batch, flush=True)
        ids = [m.id for m in store.remove(batch)]
    print("+", *ids, flush=True)
"""

# Deletes one id, then compacts with a forced rebuild, again and again.  argv: directory, first id.
_COMPACTOR = """
import sys
from index import IndexStore
store = IndexStore.open(sys.argv[1])
for victim in range(int(sys.argv[2]), 10**9):
    store.remove([victim])
    print("removed", victim, flush=True)
    print("compacted", store.compact(force=True).snapshot_gen, flush=True)
"""


def _killed_midway(rng: np.random.Generator, script: str, *args: object, after_lines: int = 1) -> list[str]:
    """Run ``script`` in a child and SIGKILL it at a random moment (0-0.3 s) once it printed ``after_lines``
    lines; returns the lines it completed."""
    child = Child(script, *args)
    child.wait_for_lines(after_lines)
    time.sleep(rng.uniform(0.0, 0.3))
    child.kill()
    return child.lines


def _written(lines: list[str], sign: str) -> list[list[int]]:
    return [[int(i) for i in line.split()[1:]] for line in lines if line.startswith(sign)]


def _snapshot_files(directory) -> tuple[set[str], set[str]]:
    """(files in ``snapshots/`` but the lock, files the database names)."""
    on_disk = {n for n in os.listdir(os.path.join(directory, "snapshots")) if n != ".lock"}
    with sqlite3.connect(f"file:{db_path(str(directory))}?mode=ro", uri=True) as conn:
        named = {r[0] for r in conn.execute("SELECT file FROM snapshots")}
    return on_disk, named


# ---------------------------------------------------------------------------------------------- processes
def test_acknowledged_adds_survive_sigkill(tmp_path):
    directory = tmp_path / "crash"
    config = IndexConfig(index_type="flat", snapshot_every=100)  # kills land in automatic snapshots too
    IndexStore.create(directory, DIM, config=config, model_info=model_info()).close()
    known: set[int] = set()
    rng = np.random.default_rng(0)
    for round_ in range(5):
        batches = _written(_killed_midway(rng, _WRITER, directory, "add", round_, 0, "-"), "+")
        acked = {i for batch in batches for i in batch}
        store = IndexStore.open(directory, expect_model=model_info())
        live = live_ids(store)
        assert acked | known <= live
        in_flight = list(range(max(acked) + 1, max(acked) + 1 + BATCH))
        assert sorted(live - acked - known) in ([], in_flight)  # at most the batch the kill cut off
        ids, xb = store.all_vectors()
        row_of = {i: r for r, i in enumerate(ids.tolist())}
        drawn = np.random.default_rng(round_)
        for batch in batches:  # the acknowledged vectors themselves, bit for bit
            x = normalized(drawn.standard_normal((BATCH, DIM)).astype(np.float32))
            np.testing.assert_array_equal(xb[[row_of[i] for i in batch]], x)
        assert ids_of(store.search(xb[-3:], 1)) == [[i] for i in ids[-3:].tolist()]
        store.close()
        known = live


def test_acknowledged_deletes_survive_sigkill(tmp_path):
    directory = tmp_path / "crash"
    store = IndexStore.create(directory, DIM, config=IndexConfig(index_type="flat", snapshot_every=50),
                              model_info=model_info())
    xb = vectors(2000)
    everything = set(add_items(store, xb).tolist())
    store.close()
    deleted: set[int] = set()
    rng = np.random.default_rng(1)
    for round_ in range(5):
        lines = _killed_midway(rng, _WRITER, directory, "delete", round_, 0, "-", after_lines=2)
        acked = {i for batch in _written(lines, "+") for i in batch}
        in_flight = set(_written(lines, "-")[-1]) if lines[-1].startswith("-") else set()
        store = IndexStore.open(directory)
        live = live_ids(store)
        assert not (deleted | acked) & live
        assert everything - deleted - acked - live in (set(), in_flight)  # the cut-off batch: all or nothing
        deleted = everything - live
        probe = sorted(deleted)[:40]
        assert not {i for hits in ids_of(store.search(xb[probe], 10)) for i in hits} & deleted
        assert len(store) == len(live) and store.get(probe[0]) is None
        store.close()


def test_two_processes_and_this_one_write_at_once(tmp_path):
    directory = tmp_path / "shared"
    store = IndexStore.create(directory, DIM, config=CONFIGS["flat"], model_info=model_info())
    go = tmp_path / "go"
    children = [Child(_WRITER, directory, "add", seed, 30, go) for seed in (1, 2)]
    for child in children:
        child.wait_for_lines(1)  # "ready": the store is open, the child waits at the start line
    go.touch()
    mine = [add_items(store, vectors(BATCH, seed=s), prefix="parent").tolist() for s in range(30)]
    for child in children:
        child.finish()
    theirs = [_written(child.lines, "+") for child in children]
    every_id = [i for batches in [mine, *theirs] for batch in batches for i in batch]
    assert len(every_id) == len(set(every_id)) == 3 * 30 * BATCH  # unique ids: no acknowledged write lost
    assert live_ids(store) == set(every_id) and len(store) == len(every_id)
    assert store.label_counts() == {"class0": 60, "class1": 60, "class2": 60, "class3": 60, "class4": 60,
                                    "w1": 300, "w2": 300}


def test_a_write_in_another_process_is_seen_by_the_next_search(tmp_path):
    directory = tmp_path / "live"
    store = IndexStore.create(directory, DIM, config=manual("hnsw"), model_info=model_info())
    xb = vectors(300)
    add_items(store, xb)
    assert len(store.search(xb[:1], 1)[0]) == 1  # the view is loaded and current
    child = Child(_WRITER, directory, "add", 77, 1, "-")
    child.finish()
    (added,) = _written(child.lines, "+")
    theirs = normalized(np.random.default_rng(77).standard_normal((BATCH, DIM)).astype(np.float32))
    assert ids_of(store.search(theirs, 1)) == [[i] for i in added]  # no reopen: the log's tail was applied
    child = Child(_WRITER, directory, "delete", 5, 1, "-")
    child.finish()
    (gone,) = _written(child.lines, "+")
    old = [i for i in gone if i < 300]
    assert not {i for hits in ids_of(store.search(xb[old], 5)) for i in hits} & set(gone)
    assert len(store) == 300 and store.get(gone[0]) is None


# ---------------------------------------------------------------------------------------------- snapshots
def test_an_open_store_switches_to_a_new_compaction(tmp_path):
    directory = tmp_path / "switch"
    writer = IndexStore.create(directory, DIM, config=manual("hnsw"), model_info=model_info())
    ids = add_items(writer, vectors(600))
    writer.snapshot()
    reader = IndexStore.open(directory)
    writer.remove(ids[:150])
    xq = vectors(20, seed=3)
    assert reader.search(xq, 10) == writer.search(xq, 10)  # caught up: the deletes are tombstones
    assert reader.stats()["tombstones"] == 150 and reader.stats()["stored_vectors"] == 600
    result = writer.compact()
    assert result.rebuilt and result.dropped_tombstones == 150
    reader.search(xq, 10)  # notices the newer snapshot and loads it in the background
    reader.wait_for_background()
    stats = reader.stats()
    assert stats["tombstones"] == 0 and stats["stored_vectors"] == 450 and stats["view_seq"] == result.snapshot_seq
    assert reader.search(xq, 10) == writer.search(xq, 10)


def test_a_store_that_missed_a_rebuild_never_records_its_older_structure(tmp_path):
    """Snapshot lineage.  A rebuilds (compact --force) and then writes a plain snapshot of its rebuilt view;
    B, which last read just before the rebuild, applies its own newer writes and snapshots.  The newest
    snapshot B sees is no rebuild, yet it descends from one: B loads that structure before writing, so its
    stale one (with the 100 tombstones the rebuild dropped) never becomes the newest snapshot."""
    directory = tmp_path / "lineage"
    a = IndexStore.create(directory, DIM, config=manual("hnsw"), model_info=model_info())
    ids = add_items(a, vectors(400))
    a.snapshot()
    b = IndexStore.open(directory)
    a.remove(ids[:100])
    xq = vectors(10, seed=2)
    b.search(xq, 5)  # B's view: the 100 deletes as tombstones
    rebuild = a.compact(force=True)
    assert rebuild.rebuilt and rebuild.dropped_tombstones == 100
    add_items(a, vectors(5, seed=1), prefix="a")
    a.snapshot()  # a copy of the rebuilt structure: not itself a rebuild
    add_items(b, vectors(5, seed=2), prefix="b")  # B's first look since the rebuild
    gen = b.snapshot()
    b.wait_for_background()
    c = IndexStore.open(directory)  # loads the newest snapshot
    try:
        stats = c.stats()
        assert stats["snapshot"]["gen"] == gen and gen > rebuild.snapshot_gen + 1  # B wrote it
        assert stats["tombstones"] == 0 and stats["stored_vectors"] == 310 and len(c) == 310
        assert stats["snapshot"]["lineage"] == rebuild.snapshot_gen
        assert ids_of(c.search(xq, 5)) == ids_of(b.search(xq, 5)) == ids_of(a.search(xq, 5))
    finally:
        for store in (a, b, c):
            store.close()


def test_snapshots_and_log_are_pruned_and_a_store_behind_reloads(tmp_path):
    directory = tmp_path / "prune"
    store = IndexStore.create(directory, DIM, config=manual("flat"), model_info=model_info())
    add_items(store, vectors(100))
    first = store.snapshot()
    behind = IndexStore.open(directory)  # its view stays at seq 100 while the log below moves on
    assert behind.stats()["view_seq"] == 100
    for step in range(3):
        add_items(store, vectors(10, seed=step + 1), prefix=f"step{step}")
        store.snapshot()
    assert store.snapshot() == first + 3  # nothing new: no further snapshot
    on_disk, named = _snapshot_files(directory)
    assert on_disk == named and len(named) == 2 and all(n.startswith(("view.120.", "view.130.")) for n in named)
    assert store.stats()["log_floor"] == 120
    with sqlite3.connect(f"file:{db_path(str(directory))}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT min(seq), max(seq) FROM changes").fetchone() == (121, 130)
    # the entries 101..120 this store still needed are gone: it must reload from the newest snapshot
    xq = vectors(10, seed=3)  # the last batch
    assert ids_of(behind.search(xq, 1)) == [[i] for i in range(120, 130)]
    assert len(behind) == 130 and behind.stats()["view_seq"] == 130
    behind.wait_for_background()
    assert ids_of(behind.search(xq, 3)) == ids_of(store.search(xq, 3)) == exact_ids(store, xq, 3)


def test_stale_snapshot_files_are_removed_by_the_next_snapshot(tmp_path):
    directory = tmp_path / "stale"
    store = IndexStore.create(directory, DIM, config=manual("flat"), model_info=model_info())
    add_items(store, vectors(50))
    store.snapshot()
    folder = directory / "snapshots"
    (folder / "view.77.0badf00d.faiss.tmp").write_bytes(b"half written")  # killed while writing
    (folder / "view.78.cafebabe.faiss").write_bytes(b"renamed, never recorded")  # killed before the commit
    store.snapshot()  # nothing new to write, but the leftovers go
    on_disk, named = _snapshot_files(directory)
    assert on_disk == named and len(named) == 1


def test_opening_sweeps_leftovers_unless_a_snapshot_is_being_written(tmp_path):
    import fcntl

    directory = tmp_path / "leftovers"
    store = IndexStore.create(directory, DIM, config=manual("flat"), model_info=model_info())
    add_items(store, vectors(50))
    store.snapshot()
    store.close()
    folder = directory / "snapshots"
    leftover = folder / ".view.90.0badf00d.faiss.0123456789abcdef.tmp"  # a server stopped mid-snapshot
    leftover.write_bytes(b"half written")
    with open(folder / ".lock", "a+b") as lock:  # another process writing a snapshot now: not touched
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        IndexStore.open(directory).close()
        assert leftover.exists()
    reopened = IndexStore.open(directory)
    try:
        on_disk, named = _snapshot_files(directory)
        assert not leftover.exists() and on_disk == named and len(named) == 1
        assert len(reopened) == 50
    finally:
        reopened.close()


def test_sigkill_during_compaction_leaves_every_item(tmp_path):
    directory = tmp_path / "compact"
    store = IndexStore.create(directory, DIM, config=manual("hnsw"), model_info=model_info())
    xb = vectors(3000)
    everything = set(add_items(store, xb).tolist())
    store.snapshot()
    store.close()
    removed: set[int] = set()
    rng = np.random.default_rng(2)
    cut_compactions = 0
    for _round in range(4):
        lines = _killed_midway(rng, _COMPACTOR, directory, max(removed, default=-1) + 1)
        removed.update(int(line.split()[1]) for line in lines if line.startswith("removed"))
        cut_compactions += lines[-1].startswith("removed")
        store = IndexStore.open(directory)
        live = live_ids(store)
        assert everything - removed - live in (set(), {max(removed) + 1})  # a cut-off delete: in or out
        removed = everything - live
        assert len(store) == len(live) and store.stats()["view_seq"] == store.log_head()
        probe = sorted(live)[:50]
        assert ids_of(store.search(xb[probe], 1)) == [[i] for i in probe]
        store.snapshot()  # clears what the kill left in snapshots/
        on_disk, named = _snapshot_files(directory)
        assert on_disk == named
        store.close()
    assert cut_compactions >= 1  # at least one kill landed inside compact()


# ---------------------------------------------------------------------------------------------- damage
@pytest.mark.parametrize("damage", ["corrupt", "delete", "truncate"])
@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_a_damaged_snapshot_is_rebuilt_from_the_database(tmp_path, index_type, damage, caplog):
    directory = tmp_path / "damaged"
    store = IndexStore.create(directory, DIM, config=manual(index_type), model_info=model_info())
    xb = vectors(500)
    ids = add_items(store, xb)
    store.remove(ids[::7])
    store.snapshot()
    add_items(store, vectors(30, seed=1), prefix="tail")
    truth = live_ids(store)
    store.close()
    (name,) = _snapshot_files(directory)[1]
    path = directory / "snapshots" / name
    if damage == "corrupt":
        with open(path, "r+b") as handle:
            handle.seek(200)
            handle.write(b"\x00garbage\x00" * 8)
    elif damage == "delete":
        path.unlink()
    else:
        os.truncate(path, path.stat().st_size // 2)
    caplog.set_level("INFO", logger="index.keeper")
    store = IndexStore.open(directory)
    assert live_ids(store) == truth and len(store) == len(truth) and store.stats()["tombstones"] == 0
    xq = vectors(20, seed=9)
    if index_type == "flat":
        assert ids_of(store.search(xq, 10)) == exact_ids(store, xq, 10)
    probe = sorted(truth)[:50]
    assert ids_of(store.search(xb[probe], 1)) == [[i] for i in probe]
    for _ in range(3):
        store.search(xq, 1)
        store.wait_for_background()
    rebuilds = [r for r in caplog.records if r.getMessage().startswith("built ")]
    assert len(rebuilds) == 1  # once at open, not again at every read


def test_missing_database_or_directory_gives_clear_errors(tmp_path):
    with pytest.raises(IndexStoreError, match="does not exist"):
        IndexStore.open(tmp_path / "nowhere")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"\x89PNG")
    with pytest.raises(IndexStoreError, match="not an index directory: store.sqlite is missing"):
        IndexStore.open(tmp_path / "photos")
    store = IndexStore.create(tmp_path / "idx", DIM, config=manual("flat"), model_info=model_info())
    add_items(store, vectors(20))
    store.snapshot()
    store.close()
    os.remove(tmp_path / "idx" / "store.sqlite")
    with pytest.raises(IndexStoreError, match="store.sqlite is missing"):
        IndexStore.open(tmp_path / "idx")


@pytest.mark.parametrize("how", ["folder deleted", "database replaced"])
def test_a_write_to_a_database_removed_under_an_open_store_is_refused(tmp_path, how):
    """An open store keeps its SQLite connection to a file that was deleted or replaced on disk: writing through
    it would acknowledge a write that no later open sees.  It is refused with a clear error, and the file now at
    the path is untouched."""
    store = IndexStore.create(tmp_path / "idx", DIM, config=manual("flat"), model_info=model_info())
    add_items(store, vectors(5))
    if how == "folder deleted":
        shutil.rmtree(tmp_path / "idx")
    else:
        other = IndexStore.create(tmp_path / "other", DIM, config=manual("flat"), model_info=model_info())
        other.close()
        target = db_path(str(tmp_path / "idx"))
        for sidecar in ("-wal", "-shm"):  # as a restore does: the old file's log must not meet the new file
            os.remove(target + sidecar)
        os.replace(db_path(str(tmp_path / "other")), target)
    with pytest.raises(IndexStoreError, match="was removed or replaced after this process opened it"):
        add_items(store, vectors(3, seed=1))
    with pytest.raises(IndexStoreError, match="was removed or replaced"):
        store.remove([0])
    store.close()
    if how == "database replaced":
        assert len(IndexStore.open(tmp_path / "idx")) == 0


def _damage_database(path: str, damage: str) -> None:
    size = os.path.getsize(path)
    if damage == "empty":
        open(path, "wb").close()
    elif damage == "truncated":
        os.truncate(path, size // 2)
    elif damage == "foreign":
        os.remove(path)
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE settings (key TEXT, value TEXT)")
            conn.execute("""INSERT INTO settings VALUES ('format', '"photo-album"')""")
        conn.close()
    else:
        with open(path, "r+b") as handle:
            handle.seek(0 if damage == "header" else size // 2)
            handle.write(b"\xff" * 8192)


@pytest.mark.parametrize("damage, match", [
    ("header", "cannot open the index database .*store.sqlite: file is not a database"),
    ("empty", "store.sqlite: no such table: settings"),
    ("truncated", "store.sqlite: database disk image is malformed"),
    ("middle", "store.sqlite(: database disk image is malformed| is damaged \\(quick_check)"),  # at open or read
    ("foreign", "store.sqlite is not a simsearch index database"),
])
def test_a_damaged_database_gives_a_clear_error(tmp_path, damage, match):
    store = IndexStore.create(tmp_path / "idx", DIM, config=manual("flat"), model_info=model_info())
    add_items(store, vectors(1000))
    store.snapshot()
    store.close()
    _damage_database(db_path(str(tmp_path / "idx")), damage)
    with pytest.raises(IndexStoreError, match=match):
        store = IndexStore.open(tmp_path / "idx")
        store.all_vectors()  # damage in the middle shows when the items are read: still a clear error


# ---------------------------------------------------------------------------------------------- identity
@pytest.fixture
def saved(tmp_path):
    store = IndexStore.create(tmp_path / "idx", DIM, config=CONFIGS["flat"], model_info=model_info())
    add_items(store, vectors(200))
    store.close()
    return tmp_path / "idx"


@pytest.mark.parametrize("field, value", [
    ("checkpoint_sha256", "b" * 64),
    ("embedding_dim", 64),
    ("metric", "l2"),
    ("preprocess", {"resize": 256, "mean": [0.5, 0.5, 0.5]}),
])
def test_model_mismatch_names_the_field(saved, field, value):
    with pytest.raises(IndexMismatchError) as info:
        IndexStore.open(saved, expect_model=model_info(**{field: value}))
    message = str(info.value)
    assert field in message
    if field == "preprocess":
        assert "['resize']" in message and "256" in message and "224" in message
    else:
        assert repr(value) in message and repr(model_info()[field]) in message
    assert info.value.field == field


def test_matching_model_accepted_and_extra_fields_ignored(saved):
    expected = model_info(name="renamed", epoch=3)
    expected["preprocess"] = {"mean": (0.5, 0.5, 0.5), "resize": 224}  # tuples and key order don't matter
    assert len(IndexStore.open(saved, expect_model=expected)) == 200


def test_layout_and_settings(saved):
    store = IndexStore.open(saved)
    store.snapshot()
    assert sorted(n for n in os.listdir(saved) if not n.endswith(("-wal", "-shm"))) == ["snapshots", "store.sqlite"]
    (name,) = _snapshot_files(saved)[0]
    assert name.startswith("view.200.") and name.endswith(".faiss")
    stats = store.stats()
    assert stats["model"] == model_info() and stats["factory"] == "IDMap2,Flat" and stats["dim"] == DIM
    assert stats["config"] == CONFIGS["flat"].to_dict() and store.config == CONFIGS["flat"]
    assert stats["log_head"] == 200 and stats["snapshot"]["seq"] == 200 and stats["created_at"]


def test_create_validates_model_info_and_refuses_existing(tmp_path, saved):
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        IndexStore.create(tmp_path / "n", DIM, config=IndexConfig(), model_info={"embedding_dim": DIM})
    with pytest.raises(ValueError, match="does not match dim"):
        IndexStore.create(tmp_path / "n", DIM, config=IndexConfig(), model_info=model_info(dim=8))
    with pytest.raises(IndexStoreError, match="already holds an index"):
        IndexStore.create(saved, DIM, config=IndexConfig(), model_info=model_info())
    assert len(IndexStore.open(saved)) == 200

"""The one-time migration from simsearch 0.1's layout (manifest.json + index.<g>.faiss + meta.<g>.sqlite),
with old-layout directories written here by hand, as 0.1 wrote them."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict

import faiss
import numpy as np
import pytest

from durablefile import file_sha256
from index import IndexConfig, IndexStore, IndexStoreError
from index.db import FORMAT_VERSION
from index.migrate import migrate_legacy
from tests.index.conftest import DIM, exact_ids, ids_of, model_info, vectors

NEW_CONFIG_FIELDS = ("auto_snapshot", "snapshot_every", "snapshot_interval_s")  # unknown to 0.1


def write_legacy_index(directory, index: faiss.Index, *, items: list[tuple], tombstones: list[int],
                       next_id: int, index_type: str, fstring: str) -> None:
    """An index directory at generation 1 of the old layout; ``items``: (id, path, label, added_at, source)."""
    os.makedirs(directory)
    faiss.write_index(index, os.path.join(directory, "index.1.faiss"))
    meta = sqlite3.connect(os.path.join(directory, "meta.1.sqlite"))
    meta.executescript("""
        CREATE TABLE items (id INTEGER PRIMARY KEY, path TEXT NOT NULL, label TEXT NOT NULL,
                            added_at REAL NOT NULL, source TEXT);
        CREATE TABLE tombstones (id INTEGER PRIMARY KEY);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        PRAGMA user_version = 1;
    """)
    meta.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", items)
    meta.executemany("INSERT INTO tombstones VALUES (?)", [(i,) for i in tombstones])
    meta.execute("INSERT INTO counters VALUES ('next_id', ?)", (next_id,))
    meta.commit()
    meta.close()
    config = {k: v for k, v in asdict(IndexConfig(index_type=index_type)).items() if k not in NEW_CONFIG_FIELDS}
    files = {"index": "index.1.faiss", "metadata": "meta.1.sqlite"}
    manifest = {"format": "simsearch-index", "format_version": 1, "generation": 1, "dim": DIM,
                "model": model_info(), "config": config, "index_type": index_type, "factory": fstring,
                "files": files, "checksums": {k: file_sha256(os.path.join(directory, f)) for k, f in files.items()},
                "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-02T10:00:00Z"}
    with open(os.path.join(directory, "manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)


@pytest.fixture
def legacy_flat(tmp_path):
    """60 vectors with ids 0..59; 10 of them deleted (50..59, still in the faiss file as HNSW-era tombstones)."""
    xb = vectors(60)
    index = faiss.index_factory(DIM, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
    index.add_with_ids(xb, np.arange(60, dtype=np.int64))
    items = [(i, f"old/{i}.png", f"class{i % 3}", 1714557600.0 + i, "upload" if i == 7 else None) for i in range(50)]
    write_legacy_index(tmp_path / "old", index, items=items, tombstones=list(range(50, 60)), next_id=60,
                       index_type="flat", fstring="IDMap2,Flat")
    return tmp_path / "old", xb, items


def test_open_refuses_the_old_layout_naming_the_command(legacy_flat):
    directory, _xb, _items = legacy_flat
    with pytest.raises(IndexStoreError, match=f"old layout.*simsearch index migrate {directory}"):
        IndexStore.open(directory)
    with pytest.raises(IndexStoreError, match="already holds an index"):
        IndexStore.create(directory, DIM, config=IndexConfig(), model_info=model_info())


def test_migration_keeps_items_ids_and_searches(legacy_flat):
    directory, xb, items = legacy_flat
    summary = migrate_legacy(directory)
    assert summary == {"items": 50, "tombstones_dropped": 10, "index_type": "flat"}
    assert sorted(os.listdir(directory)) == ["snapshots", "store.sqlite"]
    store = IndexStore.open(directory, expect_model=model_info())
    assert [(m.id, m.path, m.label, m.added_at, m.source) for m in store.iter_items()] == items
    ids, stored = store.all_vectors()
    np.testing.assert_array_equal(ids, np.arange(50))
    np.testing.assert_array_equal(stored, xb[:50])  # the old file's vectors, bit for bit
    xq = vectors(10, seed=4)
    assert ids_of(store.search(xq, 5)) == exact_ids(store, xq, 5)
    assert not {i for hits in ids_of(store.search(xb[50:], 10)) for i in hits} & set(range(50, 60))
    assert store.stats()["snapshot"] is not None and store.config.index_type == "flat"
    assert store.add(vectors(1, seed=5), labels=["new"], paths=["new.png"]).tolist() == [60]  # next_id kept
    with pytest.raises(IndexStoreError, match="already in the current layout"):
        migrate_legacy(directory)


def test_an_old_ivfpq_index_is_refused_and_left_as_it_was(tmp_path):
    xb = vectors(400)
    index = faiss.index_factory(DIM, "IVF16,PQ8x8", faiss.METRIC_INNER_PRODUCT)
    index.do_polysemous_training = False  # ~8x faster, and the index is only written, never searched
    index.train(xb)
    index.add_with_ids(xb, np.arange(400, dtype=np.int64))
    items = [(i, f"old/{i}.png", "x", 0.0, None) for i in range(400)]
    write_legacy_index(tmp_path / "old", index, items=items, tombstones=[], next_id=400, index_type="ivfpq",
                       fstring="IVF16,PQ8x8")
    before = sorted(os.listdir(tmp_path / "old"))
    with pytest.raises(IndexStoreError, match="IVF-PQ index, which keeps no vectors.*rebuild it"):
        migrate_legacy(tmp_path / "old")
    assert sorted(os.listdir(tmp_path / "old")) == before
    with pytest.raises(IndexStoreError, match="simsearch index migrate"):
        IndexStore.open(tmp_path / "old")


def test_migrating_what_is_not_an_old_index_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexStoreError, match="has no manifest.json"):
        migrate_legacy(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexStoreError, match="manifest.json is unreadable"):
        migrate_legacy(tmp_path / "bad")


def as_format_4(conn: sqlite3.Connection) -> None:
    """Turn a database of the current format back into format version 4 (no descriptors table)."""
    conn.execute("DROP TRIGGER descriptors_delete")
    conn.execute("DROP TABLE descriptors")
    conn.execute("UPDATE settings SET value = '4' WHERE key = 'format_version'")


def as_format_3(conn: sqlite3.Connection) -> None:
    """Turn a database of the current format back into format version 3 (no label_counts, no lineage)."""
    as_format_4(conn)
    for trigger in ("label_counts_add", "label_counts_delete", "label_counts_relabel"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE label_counts")
    conn.execute("ALTER TABLE snapshots DROP COLUMN lineage")
    conn.execute("UPDATE settings SET value = '3' WHERE key = 'format_version'")


def test_an_index_of_format_2_with_its_checkpoints_folder_opens_and_is_upgraded(tmp_path, caplog):
    """Format version 2 called the FAISS snapshots "checkpoints" (folder, table, config fields); opening such
    an index renames them once and loads its snapshot as it is (no rebuild)."""
    directory = tmp_path / "v2"
    config = IndexConfig(index_type="hnsw", hnsw_m=16, ef_construction=40, snapshot_every=7)
    store = IndexStore.create(directory, DIM, config=config, model_info=model_info())
    xb = vectors(300)
    ids = store.add(xb, labels=["a"] * 300, paths=[f"p/{i}.png" for i in range(300)])
    store.snapshot()
    store.remove(ids[:3])  # the log's tail after the snapshot
    store.wait_for_background()
    expected = ids_of(store.search(xb[:5], 10))
    store.close()
    # write it back as simsearch with format version 2 left it
    os.rename(directory / "snapshots", directory / "checkpoints")
    conn = sqlite3.connect(directory / "store.sqlite")
    with conn:
        as_format_3(conn)
        conn.execute("ALTER TABLE snapshots RENAME TO checkpoints")
        conn.execute("UPDATE settings SET value = '2' WHERE key = 'format_version'")
        saved = json.loads(conn.execute("SELECT value FROM settings WHERE key = 'config'").fetchone()[0])
        old = {{"auto_snapshot": "auto_checkpoint", "snapshot_every": "checkpoint_every",
                "snapshot_interval_s": "checkpoint_interval_s"}.get(k, k): v for k, v in saved.items()}
        conn.execute("UPDATE settings SET value = ? WHERE key = 'config'", (json.dumps(old),))
    conn.close()

    caplog.set_level("WARNING")
    again = IndexStore.open(directory)
    try:
        assert sorted(os.listdir(directory / "snapshots")) and not (directory / "checkpoints").exists()
        assert again.config.snapshot_every == 7 and again.config.hnsw_m == 16
        assert ids_of(again.search(xb[:5], 10)) == expected and len(again) == 297
        stats = again.stats()
        assert stats["snapshot"]["gen"] == 1 and stats["changes_since_snapshot"] == 3
        assert "unusable" not in caplog.text  # the old snapshot was read, not rebuilt
    finally:
        again.close()
    conn = sqlite3.connect(directory / "store.sqlite")
    version = json.loads(conn.execute("SELECT value FROM settings WHERE key = 'format_version'").fetchone()[0])
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert version == FORMAT_VERSION and {"snapshots", "label_counts"} <= tables and "checkpoints" not in tables
    IndexStore.open(directory).close()  # a second open finds nothing to upgrade


def test_an_index_of_format_3_gains_label_counts_and_snapshot_lineage(tmp_path):
    """Format 4 keeps the live items per label in a table (updated by triggers in every write transaction)
    and records which rebuild each snapshot descends from: opening a format-3 index fills both once."""
    directory = tmp_path / "v3"
    store = IndexStore.create(directory, DIM, config=IndexConfig(index_type="flat", auto_snapshot=False),
                              model_info=model_info())
    ids = store.add(vectors(40), labels=["a"] * 25 + ["b"] * 15, paths=[f"p/{i}.png" for i in range(40)])
    store.remove(ids[:2])
    assert store.compact(force=True).rebuilt  # gen 1, rebuilt
    store.add(vectors(3, seed=1), labels=["c"] * 3, paths=["x", "y", "z"])
    store.snapshot()  # gen 2, a copy of the rebuilt structure
    store.close()
    conn = sqlite3.connect(directory / "store.sqlite")
    with conn:
        as_format_3(conn)
    conn.close()

    again = IndexStore.open(directory)
    try:
        assert again.label_counts() == {"a": 23, "b": 15, "c": 3}
        assert again.stats()["snapshot"]["lineage"] == 1  # gen 2 descends from the rebuild of gen 1
        again.remove([int(ids[2])])
        again.add(vectors(1, seed=2), labels=["d"], paths=["d"])
        assert again.label_counts() == {"a": 22, "b": 15, "c": 3, "d": 1}  # the triggers keep it from now on
    finally:
        again.close()
    conn = sqlite3.connect(directory / "store.sqlite")
    version = json.loads(conn.execute("SELECT value FROM settings WHERE key = 'format_version'").fetchone()[0])
    lineages = conn.execute("SELECT gen, rebuilt, lineage FROM snapshots ORDER BY gen").fetchall()
    conn.close()
    assert version == FORMAT_VERSION and lineages == [(1, 1, 1), (2, 0, 1)]

"""A second vector per item (a copy descriptor beside the class embedding): one truth, one log, its own view."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from index import IndexConfig, IndexStore
from index.check import rebuild_database
from index.db import FORMAT_VERSION, db_path
from index.descriptors import REBUILD_FRACTION
from tests.index.conftest import DIM, model_info, vectors
from tests.index.test_migrate import as_format_4

SECOND = 16  # the descriptors' dimension, unlike the class embedding's


def _store(tmp_path, name: str = "idx") -> IndexStore:
    return IndexStore.create(tmp_path / name, DIM, config=IndexConfig(index_type="flat"), model_info=model_info(),
                             descriptor_model=model_info(SECOND, checkpoint_sha256="b" * 64))


def _add(store: IndexStore, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    xd = vectors(n, seed=seed + 1000, dim=SECOND)
    ids = store.add(vectors(n, seed=seed), labels=["a"] * n, paths=[f"{seed}/{i}.png" for i in range(n)],
                    descriptors=xd)
    return ids, xd


def test_each_item_carries_its_descriptor_searched_in_its_own_view(tmp_path):
    store = _store(tmp_path)
    ids, xd = _add(store, 200, seed=0)
    space = store.descriptors
    assert space is not None and space.dim == SECOND and space.model_info["checkpoint_sha256"] == "b" * 64
    hits = space.search(xd[[7, 42]], 3)
    assert [h[0].id for h in hits] == [ids[7], ids[42]]
    assert hits[0][0].similarity == pytest.approx(1.0, abs=1e-5) and hits[0][0].path == "0/7.png"
    found, stored = space.all_vectors()
    assert found.tolist() == ids.tolist() and np.allclose(stored, xd, atol=1e-6)
    # the class search is the other vector's: the descriptor of item 7 is not its class embedding
    assert store.search(vectors(200, seed=0)[[7]], 1)[0][0].id == ids[7]
    assert store.stats()["descriptors"]["dim"] == SECOND
    store.close()


def test_a_write_without_its_descriptors_is_refused_and_leaves_nothing(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(ValueError, match="copy descriptor per item"):
        store.add(vectors(3), labels=["a"] * 3, paths=["x"] * 3)
    with pytest.raises(ValueError, match="3 vectors but 2 descriptors"):
        store.add(vectors(3), labels=["a"] * 3, paths=["x"] * 3, descriptors=vectors(2, dim=SECOND))
    with pytest.raises(ValueError, match="descriptors"):
        store.add(vectors(3), labels=["a"] * 3, paths=["x"] * 3, descriptors=vectors(3, dim=SECOND + 1))
    assert len(store) == 0 and store.log_head() == 0
    plain = IndexStore.create(tmp_path / "plain", DIM, config=IndexConfig(index_type="flat"),
                              model_info=model_info())
    with pytest.raises(ValueError, match="no second vector"):
        plain.add(vectors(1), labels=["a"], paths=["x"], descriptors=vectors(1, dim=SECOND))
    assert plain.descriptors is None and plain.stats()["descriptors"] is None
    store.close()
    plain.close()


def test_another_process_sees_adds_and_deletes_of_the_descriptors(tmp_path):
    writer = _store(tmp_path)
    reader = IndexStore.open(tmp_path / "idx")
    ids, xd = _add(writer, 50, seed=1)
    assert reader.descriptors.search(xd[[3]], 1)[0][0].id == ids[3]  # the reader's view is built here
    more, xd_more = _add(writer, 20, seed=2)
    writer.remove([int(ids[3])])
    top = reader.descriptors.search(np.concatenate([xd[[3]], xd_more[[5]]]), 1)
    assert top[0][0].id != ids[3] and top[1][0].id == more[5]  # caught up from the log: the delete and the add
    with sqlite3.connect(db_path(tmp_path / "idx")) as conn:  # the delete took the descriptor row with it
        assert conn.execute("SELECT count(*) FROM descriptors WHERE id = ?", (int(ids[3]),)).fetchone()[0] == 0
    conn.close()
    assert len(reader.descriptors) == 69
    reader.close()
    writer.close()


def test_deletes_past_the_fraction_rebuild_the_view_from_the_truth(tmp_path):
    store = _store(tmp_path)
    ids, xd = _add(store, 100, seed=3)
    store.descriptors.search(xd[:1], 1)
    gone = ids[: int(REBUILD_FRACTION * 100) + 5]
    store.remove(gone.tolist())
    store.descriptors.search(xd[:1], 1)  # applies the deletes as tombstones
    assert store.descriptors._view.tombstone_count == len(gone)
    _add(store, 1, seed=4)
    hits = store.descriptors.search(xd[:1], 100)[0]  # too many tombstones: built again
    assert store.descriptors._view.tombstone_count == 0 and store.descriptors._view.stored == 100 - len(gone) + 1
    assert not {h.id for h in hits} & set(gone.tolist()) and len(hits) == 100 - len(gone) + 1
    store.close()


def test_an_index_of_format_4_upgrades_and_a_repair_keeps_the_descriptors(tmp_path):
    old = IndexStore.create(tmp_path / "old", DIM, config=IndexConfig(index_type="flat"), model_info=model_info())
    old.add(vectors(5), labels=["a"] * 5, paths=["x"] * 5)
    old.close()
    with sqlite3.connect(db_path(tmp_path / "old")) as conn:
        as_format_4(conn)
    conn.close()
    reopened = IndexStore.open(tmp_path / "old")
    assert len(reopened) == 5 and reopened.descriptors is None
    reopened.close()
    with sqlite3.connect(db_path(tmp_path / "old")) as conn:
        version = json.loads(conn.execute("SELECT value FROM settings WHERE key = 'format_version'").fetchone()[0])
        assert version == FORMAT_VERSION and conn.execute("SELECT count(*) FROM descriptors").fetchone()[0] == 0
    conn.close()

    store = _store(tmp_path)
    ids, xd = _add(store, 30, seed=5)
    store.close()
    rebuild_database(str(tmp_path / "idx"))
    store = IndexStore.open(tmp_path / "idx")
    found, stored = store.descriptors.all_vectors()
    assert found.tolist() == ids.tolist() and np.allclose(stored, xd, atol=1e-6)
    store.close()

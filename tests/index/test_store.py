"""IndexStore in one process: add, search, delete, compaction, reopen round trips, validation, threads."""

from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import pytest

from index import (IndexBusyError, IndexConfig, IndexMismatchError, IndexStore, IndexStoreError,
                   IndexUnavailableError, Maintainable, ServerCompacted, VectorStore, choose_index_type, factory)
from index.arrays import normalized
from index.db import db_path
from index.config import setting_params
from tests.index.conftest import (CONFIGS, DIM, add_items, exact_ids, ids_of, live_ids, manual, measured,
                                  model_info, vectors)


def test_add_then_search_finds_new_item(store):
    add_items(store, vectors(1000))
    new = vectors(1, seed=99)
    (new_id,) = store.add(new, labels=["shoe"], paths=["new.png"], sources=["upload"])
    (hits,) = store.search(new, 5)
    mine = next(h for h in hits if h.id == new_id)  # IVF-PQ compares compressed codes: top 5, not top 1
    assert mine.label == "shoe" and mine.path == "new.png" and mine.source == "upload"
    if store.index_type != "ivfpq":
        assert hits[0].id == new_id and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= hits[-1].score <= hits[0].score <= 1.0
    assert hits[0].score == pytest.approx((1 + hits[0].similarity) / 2)
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)


def test_reopen_round_trip_identical(tmp_path, index_type):
    """A fresh open (newest snapshot + the log after it) answers exactly like the store that wrote it."""
    store = IndexStore.create(tmp_path / "idx", DIM, config=manual(index_type), model_info=model_info())
    add_items(store, vectors(1000))
    store.remove([3, 4, 5])
    store.snapshot()
    store.remove([6, 7])  # the log's tail after the snapshot: replayed by the reopened store
    store.add(vectors(1, seed=5), labels=["tail"], paths=["tail.png"])
    xq = vectors(20, seed=7)
    before = store.search(xq, 10)
    again = IndexStore.open(tmp_path / "idx", expect_model=model_info())
    assert again.search(xq, 10) == before
    assert again.index_type == store.index_type and len(again) == len(store) == 996
    assert again.label_counts() == store.label_counts() and again.stats()["view_seq"] == store.log_head()


def test_delete_is_permanent(store, tmp_path):
    xb = vectors(1000)
    ids = add_items(store, xb)
    victims = ids[:50]
    gone = store.remove(victims)
    assert [m.id for m in gone] == victims.tolist() and gone[1].path == "img/1.png" and gone[1].label == "class1"
    assert store.remove(victims) == []  # already gone
    assert store.remove([10**9]) == []  # never existed
    assert store.get(int(victims[0])) is None
    found = {i for hits in ids_of(store.search(xb[:50], 20)) for i in hits}
    assert not found & set(victims.tolist())
    reopened = IndexStore.open(tmp_path / "idx")
    found = {i for hits in ids_of(reopened.search(xb[:50], 20)) for i in hits}
    assert not found & set(victims.tolist())
    assert len(reopened) == 950 and not live_ids(reopened) & set(victims.tolist())


def test_tombstones_and_compaction(tmp_path, index_type):
    store = IndexStore.create(tmp_path / "t", DIM, config=manual(index_type), model_info=model_info())
    xb = vectors(600)
    ids = add_items(store, xb)
    store.snapshot()
    victims = ids[::3]
    assert len(store.remove(victims)) == 200
    assert store.stats()["tombstones"] == 200 and store.stats()["ntotal"] == 400
    assert not {i for h in ids_of(store.search(xb, 10)) for i in h} & set(victims.tolist())
    store = IndexStore.open(tmp_path / "t")  # the snapshot holds them all: the log's deletes are tombstones
    assert store.stats()["tombstones"] == 200 and store.stats()["stored_vectors"] == 600
    assert not {i for h in ids_of(store.search(xb, 10)) for i in h} & set(victims.tolist())
    result = store.compact()  # 200/600 >= compact_fraction 0.2
    assert result.rebuilt and "200 tombstones" in result.reason and result.dropped_tombstones == 200
    stats = store.stats()
    assert stats["tombstones"] == 0 and stats["stored_vectors"] == 400
    assert stats["snapshot"]["gen"] == result.snapshot_gen and stats["snapshot"]["seq"] == 800
    assert not {i for h in ids_of(store.search(xb, 10)) for i in h} & set(victims.tolist())
    store.remove(ids[1:3])
    small = store.compact()  # 2/400 below the fraction: the view is written as it is
    assert not small.rebuilt and small.reason == "snapshot only" and store.stats()["tombstones"] == 2
    forced = store.compact(force=True)
    assert forced.rebuilt and forced.dropped_tombstones == 2 and forced.snapshot_gen == small.snapshot_gen + 1
    store = IndexStore.open(tmp_path / "t")
    assert len(store) == 398 and store.stats()["stored_vectors"] == 398 and store.stats()["tombstones"] == 0


def test_compaction_moves_an_outgrown_index_to_its_type(tmp_path, monkeypatch):
    config = IndexConfig(flat_max_vectors=100, hnsw_m=16, ef_construction=40, auto_snapshot=False)
    measured(monkeypatch, ("hnsw", setting_params("hnsw", DIM, config), 1000, 0.99))
    store = IndexStore.create(tmp_path / "a", DIM, config=config, model_info=model_info())
    add_items(store, vectors(50))
    assert store.index_type == "flat"
    xb = vectors(100, seed=1)
    add_items(store, xb, prefix="more")
    result = store.compact()
    assert result.rebuilt and "outgrew flat" in result.reason
    assert store.index_type == "hnsw" and store.factory == "IDMap2,HNSW16,Flat"
    reopened = IndexStore.open(tmp_path / "a")
    assert reopened.index_type == "hnsw" and len(reopened) == 150
    assert [hits[0] for hits in ids_of(reopened.search(xb, 1))] == list(range(50, 150))


def test_ivf_is_retrained_when_it_outgrows_its_sample(tmp_path):
    store = IndexStore.create(tmp_path / "q", DIM, config=manual("ivfpq"), model_info=model_info())
    add_items(store, vectors(300))
    assert not store.compact().rebuilt
    add_items(store, vectors(1000, seed=1))
    result = store.compact()
    assert result.rebuilt and "IVF trained on 300 vectors, now 1300" in result.reason
    assert not store.compact().rebuilt  # trained on 1300 now


def test_ids_are_never_reused(store, tmp_path):
    ids = add_items(store, vectors(300))
    store.remove(ids[-10:])
    more = add_items(store, vectors(300, seed=1))
    assert more.min() > ids.max()
    store.compact(force=True)
    reopened = IndexStore.open(tmp_path / "idx")
    last = reopened.add(vectors(1, seed=2), labels=["x"], paths=["x.png"])
    assert last[0] == more.max() + 1


def test_k_larger_than_collection_and_empty_index(tmp_path):
    store = IndexStore.create(tmp_path / "e", DIM, config=IndexConfig(index_type="flat"), model_info=model_info())
    assert store.search(vectors(3), 5) == [[], [], []]
    add_items(store, vectors(4))
    results = store.search(vectors(2, seed=3), 100)
    assert [len(r) for r in results] == [4, 4]
    store.remove([0, 1, 2, 3])
    assert store.search(vectors(1), 3) == [[]] and len(store) == 0


def test_hnsw_k_above_ef_search_returns_k(tmp_path):
    store = IndexStore.create(tmp_path / "h", DIM, config=CONFIGS["hnsw"], model_info=model_info())
    add_items(store, vectors(500))
    (hits,) = store.search(vectors(1, seed=5), 100, ef_search=16)
    assert len(hits) == 100


def test_auto_rule_and_lazy_resolution(tmp_path, monkeypatch):
    cfg = IndexConfig(flat_max_vectors=1000, memory_budget_bytes=10 * 2**20)
    measured(monkeypatch, ("hnsw", setting_params("hnsw", 128, cfg), 10**5, 0.99),
             ("ivfpq", setting_params("ivfpq", 128, cfg), 10**6, 0.97))
    assert choose_index_type(999, 128, cfg) == "flat"
    assert choose_index_type(5000, 128, cfg) == "hnsw"
    assert choose_index_type(10**6, 128, cfg) == "ivfpq"
    store = IndexStore.create(tmp_path / "a", DIM, config=IndexConfig(), model_info=model_info())
    assert store.index_type is None and store.search(vectors(1), 3) == [[]]
    other = IndexStore.open(tmp_path / "a")
    add_items(store, vectors(10))
    assert store.index_type == "flat" and store.stats()["factory"] == "IDMap2,Flat"
    assert other.index_type == "flat" and len(other) == 10  # decided in the add's transaction, for everyone


def test_ivfpq_needs_a_training_batch(tmp_path):
    store = IndexStore.create(tmp_path / "q", DIM, config=CONFIGS["ivfpq"], model_info=model_info())
    with pytest.raises(ValueError, match="at least 256"):
        add_items(store, vectors(10))
    assert len(store) == 0 and store.log_head() == 0  # refused before committing
    assert len(add_items(store, vectors(300))) == 300


def test_ivf_trains_on_enough_points_per_centroid(capfd):
    """nlist=16 needs 39 * 16 = 624 training points; a smaller config.train_sample must not cap that."""
    config = IndexConfig(index_type="ivfpq", ivf_nlist=16, pq_m=8, train_sample=300)
    fstring = factory.factory_string("ivfpq", DIM, config, 2000)
    assert factory.train_if_needed(factory.new_index(fstring, DIM, config), vectors(2000), config) == 39 * 16
    assert "to 16 centroids" not in capfd.readouterr().err  # faiss warns when k-means gets too few points
    assert factory.train_if_needed(factory.new_index(fstring, DIM, config), vectors(400), config) == 400
    roomy = IndexConfig(index_type="ivfpq", ivf_nlist=16, pq_m=8, train_sample=1000)
    assert factory.train_if_needed(factory.new_index(fstring, DIM, roomy), vectors(2000), roomy) == 1000


@pytest.mark.parametrize("xq, k, match", [
    (vectors(2).astype(np.float64), 3, "float32"),
    (vectors(2, dim=DIM + 1), 3, "columns"),
    (vectors(2)[0], 3, "2-D"),
    (np.full((1, DIM), np.nan, dtype=np.float32), 3, "NaN"),
    (np.zeros((1, DIM), dtype=np.float32), 3, "all-zero"),
    ([[0.0] * DIM], 3, "numpy array"),
    (vectors(2), 0, "positive integer"),
    (vectors(2), -1, "positive integer"),
    (vectors(2), 2.5, "positive integer"),
    (vectors(2), True, "positive integer"),
])
def test_search_rejects_bad_input(tmp_path, xq, k, match):
    store = IndexStore.create(tmp_path / "v", DIM, config=CONFIGS["flat"], model_info=model_info())
    add_items(store, vectors(20))
    with pytest.raises(ValueError, match=match):
        store.search(xq, k)


def test_add_rejects_bad_metadata(tmp_path):
    store = IndexStore.create(tmp_path / "v", DIM, config=CONFIGS["flat"], model_info=model_info())
    with pytest.raises(ValueError, match="labels has 1 entries"):
        store.add(vectors(2), labels=["a"], paths=["p", "q"])
    with pytest.raises(ValueError, match="paths"):
        store.add(vectors(1), labels=["a"], paths="p")
    with pytest.raises(ValueError, match="ef_search"):
        store.search(vectors(1), 1, ef_search=0)
    with pytest.raises(ValueError, match="ids"):
        store.remove(np.array([0.5]))
    assert len(store) == 0 and store.log_head() == 0


def test_item_accessors(tmp_path, index_type):
    """Metadata and vectors come from the truth: exact for every index type, IVF-PQ included."""
    store = IndexStore.create(tmp_path / "m", DIM, config=CONFIGS[index_type], model_info=model_info())
    xb = vectors(300)
    ids = add_items(store, xb)
    xb = normalized(xb)  # what the store keeps (normalize=True), bit for bit
    store.remove([ids[0]])
    item = store.get(int(ids[1]))
    assert item.label == "class1" and item.path == "img/1.png" and item.added_at > 0
    assert store.label_counts() == {"class0": 59, "class1": 60, "class2": 60, "class3": 60, "class4": 60}
    assert [m.id for m in store.iter_items()] == ids[1:].tolist()
    all_ids, all_xb = store.all_vectors()
    np.testing.assert_array_equal(all_ids, ids[1:])
    np.testing.assert_array_equal(all_xb, xb[1:])
    np.testing.assert_array_equal(store.reconstruct(int(ids[2])), xb[2])
    found = store.vectors([int(ids[0]), int(ids[2]), int(ids[3])])  # ids[0] was removed
    assert sorted(found) == [int(ids[2]), int(ids[3])]
    np.testing.assert_array_equal(found[int(ids[3])], xb[3])
    with pytest.raises(KeyError):
        store.reconstruct(int(ids[0]))
    stats = store.stats()
    assert stats["ntotal"] == 299 and stats["index_type"] == index_type and stats["model"] == model_info()
    assert stats["label_counts"]["class0"] == 59


def test_random_ids_are_distinct_live_and_seeded(tmp_path):
    store = IndexStore.create(tmp_path / "r", DIM, config=CONFIGS["flat"], model_info=model_info())
    assert len(store.random_ids(5, np.random.default_rng(0))) == 0
    ids = add_items(store, vectors(1000))
    store.remove(ids[::2])
    picked = store.random_ids(50, np.random.default_rng(0))
    assert len(set(picked.tolist())) == 50 and set(picked.tolist()) <= set(ids[1::2].tolist())
    np.testing.assert_array_equal(picked, store.random_ids(50, np.random.default_rng(0)))
    assert not np.array_equal(picked, store.random_ids(50, np.random.default_rng(1)))
    assert sorted(store.random_ids(900, np.random.default_rng(0)).tolist()) == ids[1::2].tolist()
    # most items deleted, the survivors behind one long gap: still min(n, live) distinct live ids
    store.remove([i for i in ids[1::2].tolist() if 10 < i < 999])
    survivors = live_ids(store)
    assert survivors == {1, 3, 5, 7, 9, 999}
    for seed in range(5):
        picked = store.random_ids(4, np.random.default_rng(seed)).tolist()
        assert len(set(picked)) == 4 and set(picked) <= survivors
        assert set(store.random_ids(10, np.random.default_rng(seed)).tolist()) == survivors


def test_busy_writer_gets_index_busy_error_and_writes_nothing(tmp_path):
    store = IndexStore.create(tmp_path / "b", DIM, config=manual("flat"), model_info=model_info())
    add_items(store, vectors(20))
    store = IndexStore.open(tmp_path / "b", busy_timeout_s=0.2)
    holder = sqlite3.connect(db_path(store.directory), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        started = time.monotonic()
        with pytest.raises(IndexBusyError, match="busy"):
            add_items(store, vectors(3, seed=1))
        assert 0.15 <= time.monotonic() - started < 10
        with pytest.raises(IndexBusyError):
            store.remove([0])
        assert len(store.search(vectors(1), 3)[0]) == 3  # readers are not blocked by the writer
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(store) == 20 and store.log_head() == 20 and store.get(0) is not None
    assert add_items(store, vectors(3, seed=1)).tolist() == [20, 21, 22]  # no id was spent on the refusal
    assert len(IndexStore.open(tmp_path / "b")) == 23


def test_automatic_snapshots_follow_the_policy(tmp_path):
    config = IndexConfig(index_type="flat", snapshot_every=100)
    store = IndexStore.create(tmp_path / "p", DIM, config=config, model_info=model_info())
    add_items(store, vectors(50))  # below snapshot_every, and the store was opened just now
    store.wait_for_background()
    assert store.stats()["snapshot"] is None and store.stats()["changes_since_snapshot"] == 50
    add_items(store, vectors(30, seed=1))
    store.wait_for_background()
    assert store.stats()["snapshot"] is None and store.stats()["changes_since_snapshot"] == 80
    add_items(store, vectors(80, seed=2))
    store.wait_for_background()
    assert store.stats()["snapshot"]["seq"] == 160 and store.stats()["changes_since_snapshot"] == 0
    add_items(store, vectors(5, seed=3))
    store.wait_for_background()
    assert store.stats()["changes_since_snapshot"] == 5  # pending, but neither many nor old


def test_automatic_snapshot_after_the_interval(tmp_path):
    config = IndexConfig(index_type="flat", snapshot_interval_s=0.2)
    store = IndexStore.create(tmp_path / "p", DIM, config=config, model_info=model_info())
    add_items(store, vectors(5))
    store.wait_for_background()
    assert store.stats()["snapshot"] is None
    time.sleep(0.3)
    add_items(store, vectors(5, seed=1))  # a change pending for longer than the interval
    store.wait_for_background()
    assert store.stats()["snapshot"]["seq"] == 10


def test_concurrent_search_with_add_and_remove(tmp_path, index_type):
    store = IndexStore.create(tmp_path / "c", DIM, config=CONFIGS[index_type], model_info=model_info())
    ids = add_items(store, vectors(800))
    xq = vectors(8, seed=11)
    removed: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                seen_removed = set(removed)  # removed before this search started
                for hits in store.search(xq, 10):
                    assert not {h.id for h in hits} & seen_removed
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for step in range(10):
        add_items(store, vectors(20, seed=100 + step), prefix=f"s{step}")
        victims = ids[step * 10:(step + 1) * 10]
        store.remove(victims)
        removed.update(victims.tolist())
        if step == 5:
            store.snapshot()
        if step == 8:
            store.compact(force=True)  # swaps in a rebuilt view under the readers
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(store) == 800 + 200 - 100
    if index_type == "flat":
        assert ids_of(store.search(xq, 10)) == exact_ids(store, xq, 10)


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_search_params_survive_torch_utils_patch(tmp_path, index_type):
    """pytorch-metric-learning imports faiss.contrib.torch_utils, which replaces Index.search with a
    version that has no ``params`` argument; per-query efSearch and the tombstone selector must still work."""
    pytest.importorskip("torch")
    import faiss.contrib.torch_utils  # noqa: F401 - the import is the patch

    store = IndexStore.create(str(tmp_path / "s"), DIM, config=IndexConfig(index_type=index_type),
                              model_info=model_info())
    xb = vectors(300, seed=3)
    ids = add_items(store, xb)
    store.remove([int(ids[0])])
    hits = store.search(xb[:2], 5, ef_search=32)
    assert [h.id for h in hits[0]][0] != int(ids[0]) and hits[1][0].id == int(ids[1])
    stored_ids, stored = store.all_vectors()
    assert isinstance(stored, np.ndarray) and stored.shape == (299, DIM) and stored_ids[0] == ids[1]
    assert isinstance(store.reconstruct(int(ids[2])), np.ndarray)


def test_a_write_is_acknowledged_once_committed_even_if_the_view_update_fails(tmp_path, monkeypatch, caplog):
    store = IndexStore.create(tmp_path / "w", DIM, config=CONFIGS["flat"], model_info=model_info())
    add_items(store, vectors(10))

    def broken() -> None:
        raise MemoryError("no room for the view")

    monkeypatch.setattr(store._keeper, "after_write", broken)  # noqa: SLF001 - inject the failure
    (new_id,) = store.add(vectors(1, seed=5), labels=["x"], paths=["x.png"])
    assert "the write committed" in caplog.text
    monkeypatch.undo()
    assert store.get(int(new_id)).label == "x" and len(store) == 11  # durable, and the next read catches up
    assert IndexStore.open(tmp_path / "w").get(int(new_id)) is not None


def test_index_errors_are_not_value_errors():
    """A broken index or an unreachable server is not a bad value: callers that map ``ValueError`` to 400
    must not catch them."""
    for error in (IndexStoreError, IndexUnavailableError, IndexBusyError, IndexMismatchError):
        assert not issubclass(error, ValueError), error
    assert not isinstance(IndexUnavailableError("Milvus is down"), ValueError)


def test_the_embedded_store_is_maintainable_and_always_fresh(tmp_path):
    store = IndexStore.create(tmp_path / "m", DIM, config=manual("flat"), model_info=model_info())
    try:
        assert isinstance(store, VectorStore) and isinstance(store, Maintainable)
        assert not isinstance(store, ServerCompacted)
        add_items(store, vectors(20))
        assert store.log_head() == 20 and store.snapshot() == 1
        store.remove([0])
        result = store.compact(force=True)
        assert result.rebuilt and (result.snapshot_gen, result.snapshot_seq, result.dropped_tombstones) == (2, 21, 1)
        with pytest.raises(TypeError):  # no ``fresh``: every search sees every committed write
            store.search(vectors(1), 1, fresh=False)
    finally:
        store.close()

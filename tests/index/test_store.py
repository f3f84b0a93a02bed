"""IndexStore: add, search, delete, persistence round trips, validation, concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from index import IndexConfig, IndexStore, IndexStoreError, choose_index_type
from tests.index.conftest import CONFIGS, DIM, add_items, model_info, vectors


def ids_of(results) -> list[list[int]]:
    return [[n.id for n in hits] for hits in results]


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


def test_save_open_round_trip_identical(store, tmp_path):
    add_items(store, vectors(1000))
    store.remove([3, 4, 5])
    xq = vectors(20, seed=7)
    before = store.search(xq, 10)
    store.save()
    again = IndexStore.open(tmp_path / "idx", expect_model=model_info())
    assert again.search(xq, 10) == before
    assert again.index_type == store.index_type and len(again) == len(store) == 997
    assert again.label_counts() == store.label_counts()


def test_delete_is_permanent(store, tmp_path):
    xb = vectors(1000)
    ids = add_items(store, xb)
    victims = ids[:50]
    assert store.remove(victims) == 50
    assert store.remove(victims) == 0  # already gone
    assert store.get(int(victims[0])) is None
    found = {i for hits in ids_of(store.search(xb[:50], 20)) for i in hits}
    assert not found & set(victims.tolist())
    store.save()
    reopened = IndexStore.open(tmp_path / "idx")
    found = {i for hits in ids_of(reopened.search(xb[:50], 20)) for i in hits}
    assert not found & set(victims.tolist())
    assert len(reopened) == 950


def test_hnsw_tombstones_and_compaction(tmp_path):
    store = IndexStore.create(tmp_path / "h", DIM, config=CONFIGS["hnsw"], model_info=model_info())
    xb = vectors(600)
    ids = add_items(store, xb)
    victims = ids[::3]
    store.remove(victims)
    assert store.stats()["tombstones"] == len(victims) and store.stats()["ntotal"] == 400
    assert not {i for h in ids_of(store.search(xb, 10)) for i in h} & set(victims.tolist())
    store.save()
    store = IndexStore.open(tmp_path / "h")
    assert not {i for h in ids_of(store.search(xb, 10)) for i in h} & set(victims.tolist())
    assert store.compact() is True  # 200/600 > compact_fraction 0.2
    stats = store.stats()
    assert stats["tombstones"] == 0 and stats["stored_vectors"] == 400
    assert not {i for h in ids_of(store.search(xb, 10)) for i in h} & set(victims.tolist())
    store.remove(ids[1:3])
    assert store.compact() is False  # 2/400 below the fraction
    assert store.compact(force=True) is True
    store.save()
    store = IndexStore.open(tmp_path / "h")
    assert len(store) == 398 and store.stats()["stored_vectors"] == 398


def test_ids_are_never_reused(store, tmp_path):
    ids = add_items(store, vectors(300))
    store.remove(ids[-10:])
    more = add_items(store, vectors(300, seed=1))
    assert more.min() > ids.max()
    store.save()
    reopened = IndexStore.open(tmp_path / "idx")
    last = reopened.add(vectors(1, seed=2), labels=["x"], paths=["x.png"])
    assert last[0] > more.max()


def test_k_larger_than_collection_and_empty_index(tmp_path):
    store = IndexStore.create(tmp_path / "e", DIM, config=IndexConfig(index_type="flat"), model_info=model_info())
    assert store.search(vectors(3), 5) == [[], [], []]
    add_items(store, vectors(4))
    results = store.search(vectors(2, seed=3), 100)
    assert [len(r) for r in results] == [4, 4]
    store.remove([0, 1, 2, 3])
    assert store.search(vectors(1), 3) == [[]]


def test_hnsw_k_above_ef_search_returns_k(tmp_path):
    store = IndexStore.create(tmp_path / "h", DIM, config=CONFIGS["hnsw"], model_info=model_info())
    add_items(store, vectors(500))
    (hits,) = store.search(vectors(1, seed=5), 100, ef_search=16)
    assert len(hits) == 100


def test_auto_rule_and_lazy_resolution(tmp_path):
    cfg = IndexConfig(flat_max_vectors=1000, memory_budget_bytes=10 * 2**20)
    assert choose_index_type(999, 128, cfg) == "flat"
    assert choose_index_type(5000, 128, cfg) == "hnsw"
    assert choose_index_type(10**6, 128, cfg) == "ivfpq"
    store = IndexStore.create(tmp_path / "a", DIM, config=IndexConfig(), model_info=model_info())
    assert store.index_type is None and store.search(vectors(1), 3) == [[]]
    store.save()
    store = IndexStore.open(tmp_path / "a")
    add_items(store, vectors(10))
    assert store.index_type == "flat" and store.stats()["factory"] == "IDMap2,Flat"


def test_ivfpq_needs_a_training_batch(tmp_path):
    store = IndexStore.create(tmp_path / "q", DIM, config=CONFIGS["ivfpq"], model_info=model_info())
    with pytest.raises(ValueError, match="at least 256"):
        add_items(store, vectors(10))


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
    assert len(store) == 0


def test_item_accessors(tmp_path):
    store = IndexStore.create(tmp_path / "m", DIM, config=CONFIGS["flat"], model_info=model_info())
    xb = vectors(50)
    ids = add_items(store, xb)
    store.remove([ids[0]])
    item = store.get(int(ids[1]))
    assert item.label == "class1" and item.path == "img/1.png" and item.added_at > 0
    assert store.label_counts() == {"class0": 9, "class1": 10, "class2": 10, "class3": 10, "class4": 10}
    picked = store.random_ids(10, np.random.default_rng(0))
    assert len(set(picked.tolist())) == 10 and ids[0] not in picked
    np.testing.assert_array_equal(picked, store.random_ids(10, np.random.default_rng(0)))
    assert len(store.random_ids(500, np.random.default_rng(0))) == 49
    assert [m.id for m in store.iter_items()] == ids[1:].tolist()
    all_ids, all_xb = store.all_vectors()
    np.testing.assert_array_equal(all_ids, ids[1:])
    np.testing.assert_allclose(all_xb, xb[1:], atol=1e-6)
    np.testing.assert_allclose(store.reconstruct(int(ids[2])), xb[2], atol=1e-6)
    stats = store.stats()
    assert stats["ntotal"] == 49 and stats["index_type"] == "flat" and stats["model"] == model_info()
    assert stats["label_counts"]["class0"] == 9


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
            store.save()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(store) == 800 + 200 - 100


def test_ivfpq_has_no_stored_vectors(tmp_path):
    store = IndexStore.create(tmp_path / "q", DIM, config=CONFIGS["ivfpq"], model_info=model_info())
    add_items(store, vectors(300))
    with pytest.raises(IndexStoreError, match="compressed codes"):
        store.all_vectors()


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
    stored_ids, stored = store.all_vectors()  # reconstruct_n is patched too: still numpy out
    assert isinstance(stored, np.ndarray) and stored.shape == (299, DIM) and stored_ids[0] == ids[1]
    assert isinstance(store.reconstruct(int(ids[2])), np.ndarray)

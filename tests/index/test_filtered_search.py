"""Label filters keep their promise on every index type: ``k`` hits of the class, the exact ones for a class
up to ``exact_filter_max`` items, however rare; and ``label_counts`` is kept in the write transaction."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from index import IndexStore
from index.base import ItemMeta
from index.db import db_path
from index.label_filter import exact_search
from tests.index.conftest import DIM, ids_of, manual, model_info, vectors

N = 10_000
RARE = 50  # 0.5% of N


def rare_class_store(tmp_path, index_type: str, **config) -> tuple[IndexStore, np.ndarray, np.ndarray]:
    """``N`` clustered vectors, ``RARE`` of them (spread over the clusters) labelled "rare"; returns the store,
    every vector and the rare ids."""
    store = IndexStore.create(tmp_path / index_type, DIM, config=manual(index_type, **config), model_info=model_info())
    xb = vectors(N, seed=11)
    rare = np.random.default_rng(5).choice(N, RARE, replace=False)
    labels = np.array(["common"] * N, dtype=object)
    labels[rare] = "rare"
    ids = store.add(xb, labels=list(labels), paths=[f"p/{i}.png" for i in range(N)])
    return store, xb, np.sort(ids[rare])


def exact_class_ids(store: IndexStore, xq: np.ndarray, label: str, k: int) -> list[list[int]]:
    """The true ``k`` nearest live ids carrying ``label``, by brute force over the stored vectors (ties by id)."""
    ids, xb = store.all_vectors()
    labels = {item.id: item.label for item in store.iter_items()}
    mine = np.array([labels[int(i)] == label for i in ids])
    ids, xb = ids[mine], xb[mine]
    order = np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :k]
    return ids[order].tolist()


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq", "flat"])
def test_a_rare_class_gets_exactly_the_k_exact_hits(tmp_path, index_type):
    store, _, rare = rare_class_store(tmp_path, index_type)
    try:
        xq = vectors(20, seed=99)
        for k in (10, 30):
            results = store.search(xq, k, label="rare")
            assert all(len(hits) == k and {h.label for h in hits} == {"rare"} for hits in results)
            assert ids_of(results) == exact_class_ids(store, xq, "rare", k)
        assert [len(hits) for hits in store.search(xq[:2], 100, label="rare")] == [RARE, RARE]
        assert store.search(xq[:2], 5, label="none such") == [[], []]
    finally:
        store.close()


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_the_faiss_filter_path_still_returns_k_hits(tmp_path, index_type):
    """``exact_filter_max=0``: every filter goes through FAISS with an IDSelector; a query whose walk meets
    too few of the class is answered exactly instead, so no row comes back short."""
    store, _, rare = rare_class_store(tmp_path, index_type, exact_filter_max=0)
    try:
        xq = vectors(20, seed=99)
        results = store.search(xq, 10, label="rare")
        assert all(len(hits) == 10 and {h.id for h in hits} <= set(rare.tolist()) for hits in results)
        common = store.search(xq, 10, label="common")
        assert all(len(hits) == 10 and {h.label for h in hits} == {"common"} for hits in common)
    finally:
        store.close()


def test_the_cached_class_follows_every_write_in_every_process(tmp_path):
    """The class's vectors are cached per label and caught up from the log: adds and deletes made through
    another store on the same directory are in the next filtered search."""
    store, xb, rare = rare_class_store(tmp_path, "hnsw")
    other = IndexStore.open(tmp_path / "hnsw")
    try:
        xq = vectors(5, seed=99)
        before = ids_of(store.search(xq, 5, label="rare"))
        (new,) = other.add(xq[:1], labels=["rare"], paths=["new.png"])  # the first query's own vector
        other.remove(before[1][:2])
        after = store.search(xq, 5, label="rare")
        assert after[0][0].id == new and after[0][0].similarity == pytest.approx(1.0, abs=1e-5)
        assert not set(before[1][:2]) & set(ids_of(after)[1])
        assert ids_of(after) == exact_class_ids(store, xq, "rare", 5)
        assert store.label_counts() == {"common": N - RARE, "rare": RARE - 1}
    finally:
        other.close()
        store.close()


def test_equal_scores_rank_by_id():
    ids = np.array([3, 5, 8, 9], dtype=np.int64)
    xb = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.float32)
    D, I = exact_search(np.array([[1, 0], [0, 1]], dtype=np.float32), ids, xb, 3)
    assert I.tolist() == [[3, 9, 5], [5, 8, 3]] and D[0].tolist() == [1.0, 1.0, 0.0]
    assert exact_search(np.zeros((1, 2), np.float32), ids[:0], xb[:0], 3)[1].shape == (1, 0)


def test_label_counts_are_kept_by_every_write(tmp_path):
    """Adds, deletes and replicated items update the label_counts table in their own transaction."""
    store = IndexStore.create(tmp_path / "counts", DIM, config=manual("flat"), model_info=model_info())
    try:
        ids = store.add(vectors(30), labels=["a"] * 10 + ["b"] * 20, paths=["p"] * 30)
        store.remove(ids[:10])  # every "a"
        store.replicate(vectors(3, seed=1), [ItemMeta(1000 + i, "q", "c", 0.0) for i in range(3)],
                        deleted=[int(ids[10])])
        store.replicate(vectors(3, seed=1), [ItemMeta(1000 + i, "q", "c", 0.0) for i in range(3)])  # present
        expected = {"b": 19, "c": 3}
        assert store.label_counts() == expected
        with sqlite3.connect(db_path(store.directory)) as conn:
            truth = dict(conn.execute("SELECT label, count(*) FROM items GROUP BY label"))
        assert truth == expected
    finally:
        store.close()

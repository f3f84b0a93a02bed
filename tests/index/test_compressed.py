"""The compressed layout (``ivfpq``: IVF-HNSW-PQ codes, re-ranked exactly from SQLite), the recall table behind
``--type auto``, and the memory-bounded build and snapshot paths."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index import IndexConfig, IndexStore, choose_index_type, recall_table
from index.config import estimate_bytes, expected_quality, setting_params
from index.db import StoreDB
from index.rerank import rerank
from tests.index.conftest import DIM, add_items, exact_ids, ids_of, measured, model_info, vectors

COMPRESSED = IndexConfig(index_type="ivfpq", ivf_nlist=16, pq_m=8, pq_nbits=4, nprobe=16, rerank=64,
                         train_sample=256, auto_snapshot=False)


def recall(store: IndexStore, xq: np.ndarray, k: int = 10, **search) -> float:
    truth = exact_ids(store, xq, k)
    found = ids_of(store.search(xq, k, **search))
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))


@pytest.fixture
def compressed(tmp_path):
    store = IndexStore.create(tmp_path / "c", DIM, config=COMPRESSED, model_info=model_info())
    add_items(store, vectors(1500))
    yield store
    store.close()


def test_layout_is_ivf_with_an_hnsw_quantizer_and_pq_codes(compressed):
    assert compressed.index_type == "ivfpq" and compressed.factory == "IVF16_HNSW32,PQ8x4"
    stats = compressed.stats()
    assert stats["index_params"] == {"code": "PQ8x4", "nprobe": 16, "rerank": 64}
    assert 12 <= stats["bytes_per_vector"] < 4 * DIM  # 4-byte codes + 8-byte ids (+ centroids): not the floats


def test_rerank_raises_recall_over_the_codes_alone(compressed):
    xq = vectors(100, seed=3)
    alone, reranked = recall(compressed, xq, rerank=0), recall(compressed, xq)
    assert reranked >= 0.95 and reranked > alone + 0.2
    q = vectors(1, seed=4)
    (hits,) = compressed.search(q, 10)
    for hit in hits:  # exact cosines, not distances between codes
        assert hit.similarity == pytest.approx(float(compressed.reconstruct(hit.id) @ q[0]), abs=1e-6)
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)


def test_round_trip_through_snapshot_and_catch_up(compressed, tmp_path):
    xq = vectors(30, seed=7)
    compressed.remove([3, 4, 5])
    compressed.snapshot()
    other = IndexStore.open(tmp_path / "c")  # the snapshot, then nothing to replay
    assert other.search(xq, 10) == compressed.search(xq, 10)
    (new_id,) = compressed.add(vectors(1, seed=99), labels=["tail"], paths=["tail.png"])
    compressed.remove([6])
    (hits,) = other.search(vectors(1, seed=99), 5)  # caught up from the log: no reload
    assert hits[0].id == new_id and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert other.search(xq, 10) == compressed.search(xq, 10) and len(other) == 1500 - 4 + 1
    reopened = IndexStore.open(tmp_path / "c")  # the snapshot + the log's tail
    assert reopened.search(xq, 10) == compressed.search(xq, 10)
    assert reopened.stats()["view_seq"] == compressed.log_head()


def test_deleted_items_never_come_back(compressed, tmp_path):
    xb = vectors(1500)
    victims = set(range(0, 1500, 7))
    compressed.remove(sorted(victims))
    found = {i for hits in ids_of(compressed.search(xb[:200], 20)) for i in hits}
    assert found and not found & victims
    result = compressed.compact(force=True)  # rebuilt from the truth, without the tombstones
    assert result.rebuilt and compressed.stats()["tombstones"] == 0
    reopened = IndexStore.open(tmp_path / "c")
    found = {i for hits in ids_of(reopened.search(xb[:200], 20)) for i in hits}
    assert not found & victims and len(reopened) == 1500 - len(victims)


def test_label_filter_is_reranked_within_the_label(compressed):
    xq = vectors(20, seed=11)
    for hits in compressed.search(xq, 10, label="class2"):
        assert len(hits) == 10 and {h.label for h in hits} == {"class2"}
    ids, xb = compressed.all_vectors()
    mine = ids % 5 == 2  # add_items labels item i with class{i % 5}
    truth = ids[mine][np.argsort(-(xq @ xb[mine].T), axis=1)[:, :10]]
    found = ids_of(compressed.search(xq, 10, label="class2"))
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth.tolist())]) >= 0.9


def test_an_index_of_the_older_ivfpq_layout_opens_and_is_rebuilt_in_the_new(tmp_path):
    """simsearch before the HNSW quantizer wrote ``IVF{nlist},PQ{m}x{nbits}``: it still opens, searches with
    re-ranking, and its next rebuild takes the current layout."""
    store = IndexStore.create(tmp_path / "o", DIM, config=COMPRESSED, model_info=model_info())
    with StoreDB(str(tmp_path / "o" / "store.sqlite")).transaction() as conn:
        StoreDB.set_setting(conn, "index_type", "ivfpq")
        StoreDB.set_setting(conn, "factory", "IVF16,PQ8x4")
    store = IndexStore.open(tmp_path / "o")
    add_items(store, vectors(1500))
    store.snapshot()
    old = IndexStore.open(tmp_path / "o")
    assert old.factory == "IVF16,PQ8x4" and recall(old, vectors(50, seed=2)) >= 0.95
    assert old.compact(force=True).rebuilt is False  # no tombstones: the view is kept as it is
    old.remove([0])
    assert old.compact(force=True).rebuilt and old.factory == "IVF16_HNSW32,PQ8x4"


def test_rerank_drops_candidates_deleted_since_the_search():
    xq = np.eye(4, dtype=np.float32)[:2]
    store = {1: np.eye(4, dtype=np.float32)[0], 2: np.eye(4, dtype=np.float32)[1], 3: 0.5 * np.ones(4, np.float32)}

    def read(ids):
        found = np.array([i for i in ids if i in store], dtype=np.int64)
        return found, np.array([store[i] for i in found], dtype=np.float32).reshape(-1, 4)

    D, I = rerank(xq, np.array([[3, 9, 1, -1], [9, 3, 2, 1]]), read, 2)  # 9: deleted since
    assert I.tolist() == [[1, 3], [2, 3]] and D[:, 0].tolist() == [1.0, 1.0]
    D, I = rerank(xq, np.array([[9, -1], [-1, -1]]), read, 3)
    assert I.tolist() == [[-1, -1], [-1, -1]]


def test_rebuild_reads_the_truth_in_chunks_and_snapshots_without_serialize(compressed, tmp_path, monkeypatch):
    """A rebuild trains on a sample and adds chunk by chunk (never ``all_vectors``); a snapshot is streamed to
    its file (never ``faiss.serialize_index``, a second copy of the index in memory)."""
    def refuse(*args, **kwargs):
        raise AssertionError("loads every vector / copies the index in memory")

    monkeypatch.setattr(StoreDB, "all_vectors", refuse)
    monkeypatch.setattr(faiss, "serialize_index", refuse)
    chunks = []
    original = StoreDB.iter_vectors

    def counting(conn, dim, batch=50_000):
        for chunk in original(conn, dim, batch=400):
            chunks.append(len(chunk[0]))
            yield chunk

    monkeypatch.setattr(StoreDB, "iter_vectors", staticmethod(counting))
    compressed.remove([0])
    result = compressed.compact(force=True)
    assert result.rebuilt and chunks == [400, 400, 400, 299]
    reopened = IndexStore.open(tmp_path / "c")
    xq = vectors(10, seed=5)
    assert reopened.search(xq, 10) == compressed.search(xq, 10)


def test_training_sample_is_seeded_and_bounded(tmp_path):
    store = IndexStore.create(tmp_path / "s", DIM, config=COMPRESSED, model_info=model_info())
    add_items(store, vectors(3000))
    db = StoreDB(str(tmp_path / "s" / "store.sqlite"))
    with db.read_transaction() as conn:
        picked = StoreDB.sample_vectors(conn, DIM, lambda n: np.arange(0, n, 3))
        _, everything = StoreDB.all_vectors(conn, DIM)
    np.testing.assert_array_equal(picked, everything[::3])
    assert store.stats()["index_type"] == "ivfpq"


# ---------------------------------------------------------------------------------------------- auto and the table
def test_auto_never_picks_a_setting_measured_below_the_recall_floor(monkeypatch):
    config = IndexConfig(flat_max_vectors=1000, memory_budget_bytes=2**30)
    hnsw, ivfpq = setting_params("hnsw", 128, config), setting_params("ivfpq", 128, config)
    measured(monkeypatch, ("hnsw", hnsw, 10**6, 0.93), ("ivfpq", ivfpq, 10**6, 0.97))
    assert choose_index_type(500, 128, config) == "flat"
    assert choose_index_type(10**5, 128, config) == "ivfpq"  # hnsw is faster, but below the floor
    measured(monkeypatch, ("hnsw", hnsw, 10**6, 0.99), ("ivfpq", ivfpq, 10**6, 0.97))
    assert choose_index_type(10**5, 128, config) == "hnsw"  # the faster of two that qualify
    assert choose_index_type(2 * 10**6, 128, config) == "ivfpq"  # hnsw no longer fits 1 GiB
    measured(monkeypatch, ("hnsw", hnsw, 10**6, 0.90), ("ivfpq", ivfpq, 10**6, 0.90))
    assert choose_index_type(10**5, 128, config) == "flat"  # nothing approximate qualifies: exact, it fits
    measured(monkeypatch, ("hnsw", hnsw, 10**4, 0.99))
    assert choose_index_type(10**6, 128, config) == "flat"  # measured at 10k: not evidence for 1M
    assert choose_index_type(10**5, 128, config) == "hnsw"  # ... but for 100k (10x)
    strict = IndexConfig(flat_max_vectors=1000, recall_floor=0.995)
    assert choose_index_type(10**5, 128, strict) == "flat"
    assert choose_index_type(10**5, 128, IndexConfig(index_type="ivfpq")) == "ivfpq"  # explicit: as asked


def test_table_lookup_takes_the_worst_data_set_at_the_nearest_larger_size():
    row = {"index_type": "ivfpq", "params": {"nprobe": 16}, "p50_ms": 0.5, "bytes_per_vector": 41.0}
    rows = ({**row, "data": "a", "n": 10**5, "recall_at_10": 0.99},
            {**row, "data": "a", "n": 10**6, "recall_at_10": 0.97},
            {**row, "data": "b", "n": 6 * 10**4, "recall_at_10": 0.96})
    found = recall_table.expected("ivfpq", {"nprobe": 16}, 2 * 10**5, rows)
    assert (found.recall_at_10, found.measured_n, found.data, found.extrapolated) == (0.96, 6 * 10**4, "b", True)
    assert recall_table.expected("ivfpq", {"nprobe": 16}, 5 * 10**4, rows).recall_at_10 == 0.96
    assert recall_table.expected("ivfpq", {"nprobe": 16}, 10**6, rows).recall_at_10 == 0.97  # b: 1M > 10 x 60k
    assert recall_table.expected("ivfpq", {"nprobe": 32}, 10**5, rows) is None
    assert recall_table.expected("ivfpq", {"nprobe": 16}, 10**8, rows) is None
    flat = ({"index_type": "flat", "params": {}, "data": "a", "n": 10**5, "recall_at_10": 1.0, "p50_ms": 2.0},)
    assert recall_table.expected("flat", {}, 10**6, flat).p50_ms == 20.0  # exact search is linear in n


def test_the_shipped_table_backs_every_automatic_choice():
    """For the default config, at every size the shipped table covers, ``auto`` picks flat or a setting whose
    measured recall@10 reaches the floor; stats would show that expectation."""
    assert recall_table.load(), "index/recall_table.json is missing or empty"
    for config in (IndexConfig(), IndexConfig(memory_budget_bytes=2**30)):
        for n in (1_000, 20_000, 60_000, 100_000, 300_000, 1_000_000, 10_000_000):
            chosen = choose_index_type(n, 128, config)
            quality = expected_quality(chosen, n, 128, config)
            assert chosen == "flat" or quality.recall_at_10 >= config.recall_floor, (n, chosen, quality)
            assert chosen == "flat" or estimate_bytes(chosen, n, 128, config) <= config.memory_budget_bytes


def test_a_1gb_budget_at_1m_vectors_picks_a_setting_measured_at_that_size():
    """1M 128-d vectors under a 1 GiB budget, and 10M under the default 4 GiB one (where only the compressed
    index fits): ``auto`` takes an approximate index whose default setting the shipped table measured at that
    very size (not extrapolated) at recall@10 >= 0.95."""
    for n, config, allowed in ((10**6, IndexConfig(memory_budget_bytes=2**30), ("hnsw", "ivfpq")),
                               (10**7, IndexConfig(), ("ivfpq",))):
        chosen = choose_index_type(n, 128, config)
        quality = expected_quality(chosen, n, 128, config)
        assert chosen in allowed and quality.measured_n == n and not quality.extrapolated, (n, chosen, quality)
        assert quality.recall_at_10 >= 0.95


def test_a_collection_larger_than_its_training_sample_is_not_retrained_at_every_compaction(tmp_path):
    """The quantizer trains on a sample (here 39 x 16 = 624 of 3000 vectors) that stands for the whole
    collection: compaction retrains once the collection has grown 4x past it, not at every snapshot."""
    store = IndexStore.create(tmp_path / "t", DIM, config=COMPRESSED, model_info=model_info())
    add_items(store, vectors(3000))
    assert store.stats()["snapshot"] is not None  # the first training wrote one
    add_items(store, vectors(10, seed=1))
    assert not store.compact().rebuilt and not store.compact().rebuilt
    add_items(store, vectors(9000, seed=2))
    assert "IVF trained on 3000 vectors, now 12010" in store.compact().reason

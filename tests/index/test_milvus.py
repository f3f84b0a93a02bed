"""``MilvusStore`` against a real Milvus (``milvus-lite server`` on 127.0.0.1): the same contract as the
embedded store, the model guard, ids, filters, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from index import (IndexConfig, IndexMismatchError, IndexStoreError, IndexUnavailableError, Maintainable,
                   ServerCompacted, VectorStore)
from index.location import create_store, default_home, is_milvus, open_store, parse_location
from index.milvus import ID_HIGH, ID_LOW, MilvusStore

DIM = 16
MODEL = {"checkpoint_sha256": "ab" * 32, "embedding_dim": DIM, "metric": "ip", "preprocess": {"size": 28}}


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def store(new_milvus_index):
    location, home = new_milvus_index("unit")
    s = create_store(location, DIM, config=IndexConfig(index_type="hnsw"), model_info=MODEL, home=str(home))
    yield s
    s.close()


@pytest.mark.parametrize("text, uri, collection, lite", [
    ("milvus://127.0.0.1:19531/abc", "http://127.0.0.1:19531", "abc", False),
    ("milvus://db.example/c_1", "http://db.example:19530", "c_1", False),
    ("milvus+tls://db.example:443/x", "https://db.example:443", "x", False),
])
def test_parse_milvus_uris(text, uri, collection, lite):
    location = parse_location(text)
    assert (location.uri, location.collection, location.lite) == (uri, collection, lite)
    assert parse_location(location.display) == location and is_milvus(text)


def test_parse_paths_and_refusals(tmp_path):
    assert parse_location(str(tmp_path / "index")) is None and not is_milvus(tmp_path / "index")
    lite = parse_location(str(tmp_path / "vectors.db"))
    assert lite.lite and lite.collection == "simsearch" and lite.uri == str(tmp_path / "vectors.db")
    assert default_home(tmp_path / "vectors.db") == str(tmp_path / "vectors-files")
    for bad in ("milvus://user:secret@host:19530/c", "milvus://host:99999/c", "milvus://host:1/",
                "milvus://host:1/1abc", "milvus://host:1/a-b", "http://host:19530"):
        with pytest.raises(IndexStoreError) as err:
            parse_location(bad)
        assert "secret" not in str(err.value)


def test_add_search_get_remove(store):
    xb = vectors(300)
    labels = [f"c{i % 3}" for i in range(300)]
    ids = store.add(xb, labels=labels, paths=[f"/img/{i}.png" for i in range(300)])
    assert len(set(ids.tolist())) == 300 and ((ids >= ID_LOW) & (ids < ID_HIGH)).all()
    assert len(store) == 300
    hits = store.search(xb[:2], 5)
    assert [h[0].id for h in hits] == ids[:2].tolist() and hits[0][0].similarity == pytest.approx(1.0, abs=1e-5)
    assert hits[0][0].score == pytest.approx((1 + hits[0][0].similarity) / 2)
    only = store.search(xb[:1], 10, label="c1")[0]
    assert len(only) == 10 and {h.label for h in only} == {"c1"}
    assert store.search(xb[:1], 10, label="nope")[0] == []
    item = store.get(int(ids[4]))
    assert (item.label, item.path, item.source) == ("c1", "/img/4.png", None)
    np.testing.assert_allclose(store.reconstruct(int(ids[4])), xb[4] / np.linalg.norm(xb[4]), atol=1e-6)
    found = store.vectors([int(ids[4]), int(ids[7]), 12345])
    assert sorted(found) == sorted([int(ids[4]), int(ids[7])])
    np.testing.assert_allclose(found[int(ids[7])], xb[7] / np.linalg.norm(xb[7]), atol=1e-6)
    gone = store.remove([int(ids[0]), int(ids[0]), 12345])
    assert [g.id for g in gone] == [int(ids[0])] and store.get(int(ids[0])) is None
    assert store.remove([int(ids[0])]) == []
    assert int(ids[0]) not in [h.id for h in store.search(xb[:1], 5)[0]]  # gone from searches at once
    assert len(store) == 299 and store.label_counts() == {"c0": 99, "c1": 100, "c2": 100}
    all_ids, all_xb = store.all_vectors()
    assert all_ids.tolist() == sorted(ids[1:].tolist()) and all_xb.shape == (299, DIM)
    assert {m.id for m in store.iter_items()} == set(ids[1:].tolist())
    picked = store.random_ids(7, np.random.default_rng(0))
    assert len(set(picked.tolist())) == 7 and set(picked.tolist()) <= set(ids[1:].tolist())
    assert store.random_ids(1000, np.random.default_rng(1)).size == 299


def test_reopen_model_guard_and_stats(store, new_milvus_index):
    location = store.location
    ids = store.add(vectors(5), labels=["a"] * 5, paths=["/p"] * 5, sources=["upload"] * 5)
    store.flush()
    again = open_store(location, expect_model=MODEL)
    try:
        assert len(again) == 5 and again.get(int(ids[0])).source == "upload"
        stats = again.stats()
        assert stats["backend"] == "milvus" and stats["factory"].startswith("milvus:HNSW")
        assert stats["model"] == MODEL and stats["ntotal"] == 5
    finally:
        again.close()
    with pytest.raises(IndexMismatchError) as err:
        open_store(location, expect_model=dict(MODEL, preprocess={"size": 32}))
    assert err.value.field == "preprocess"
    with pytest.raises(IndexMismatchError):
        open_store(location, expect_model=dict(MODEL, checkpoint_sha256="cd" * 32))
    with pytest.raises(IndexStoreError, match="already holds"):
        create_store(location, DIM, config=IndexConfig(), model_info=MODEL)
    missing, _ = new_milvus_index("missing")
    with pytest.raises(IndexStoreError, match="no such collection"):
        open_store(missing)


def test_bad_inputs_are_clear_errors(store, milvus_server):
    with pytest.raises(ValueError, match="dim|shape|dimension"):
        store.add(vectors(2)[:, :8], labels=["a", "b"], paths=["/a", "/b"])
    with pytest.raises(ValueError, match="label"):
        store.add(vectors(1), labels=["é" * 1100], paths=["/a"])
    with pytest.raises(ValueError):
        store.search(vectors(1)[:, :8], 3)
    with pytest.raises(ValueError, match="label filter"):
        store.search(vectors(1), 3, label="")
    assert len(store) == 0
    # a collection that simsearch did not make is refused, not misread
    from pymilvus import MilvusClient

    client = MilvusClient(uri=f"http://127.0.0.1:{milvus_server.port}")
    client.create_collection("foreign", dimension=DIM)
    client.close()
    with pytest.raises(IndexStoreError, match="not a simsearch collection"):
        open_store(f"milvus://127.0.0.1:{milvus_server.port}/foreign")


def test_unreachable_server_is_a_clear_error(monkeypatch):
    from bench.milvus_servers import free_port

    monkeypatch.setenv("SIMSEARCH_MILVUS_TIMEOUT_S", "2")
    with pytest.raises(IndexUnavailableError, match="unavailable"):
        MilvusStore.open(parse_location(f"milvus://127.0.0.1:{free_port()}/nothing"))


def test_token_goes_to_the_client_not_the_location(monkeypatch, store):
    monkeypatch.setenv("SIMSEARCH_MILVUS_TOKEN", "root:Milvus")  # milvus-lite ignores it; it must not leak
    again = open_store(store.location)
    try:
        text = str(again.stats()) + again.location
        assert "Milvus" not in text.replace("milvus", "")
    finally:
        again.close()


def test_milvus_lite_data_directory(tmp_path):
    """A ``PATH.db`` location runs Milvus Lite in this process: same interface, persistent across reopen."""
    path = str(tmp_path / "vectors.db")
    s = create_store(path, DIM, config=IndexConfig(index_type="flat"), model_info=MODEL)
    try:
        ids = s.add(vectors(20), labels=["x"] * 20, paths=["/p"] * 20)
        assert s.home == str(tmp_path / "vectors-files")
    finally:
        s.close()
    again = open_store(path, expect_model=MODEL)
    try:
        assert len(again) == 20 and again.search(vectors(20)[:1], 1)[0][0].id == int(ids[0])
    finally:
        again.close()


def test_random_ids_of_a_copied_index_need_no_scan(built_index, new_milvus_index, monkeypatch):
    """Ids copied from an index directory (small integers) are sampled by window like random ids."""
    from engine.build import copy_index

    location, home = new_milvus_index("sample")
    copy_index(built_index, location, home=home, progress=False)
    source = open_store(built_index)
    target = open_store(location)
    try:
        expected = {item.id for item in source.iter_items()}

        def no_scan():
            raise AssertionError("random_ids scanned the collection")

        monkeypatch.setattr(target, "iter_items", no_scan)
        seen: set[int] = set()
        for seed in range(5):
            picked = target.random_ids(5, np.random.default_rng(seed))
            assert len(set(picked.tolist())) == 5 and set(picked.tolist()) <= expected
            seen |= set(picked.tolist())
        assert len(seen) >= 20  # different draws, not the same window every time
    finally:
        source.close()
        target.close()


def test_copy_streams_the_source_in_chunks(built_index, new_milvus_index, monkeypatch):
    """``index copy`` holds one chunk of the source at a time (never ``all_vectors``), and every item arrives with
    its id, label and vector; the copy read back chunk by chunk is the source."""
    from engine.build import copy_items
    from index import IndexStore

    def refuse(self):
        raise AssertionError("the copy loaded every vector at once")

    monkeypatch.setattr(IndexStore, "all_vectors", refuse)
    location, _ = new_milvus_index("stream")
    source = open_store(built_index)
    target = create_store(location, source.dim, config=IndexConfig(index_type="flat"), model_info=source.model_info)
    try:
        chunks = []
        assert copy_items(source, target, batch=7, progress=chunks.append) == len(source)
        assert max(chunks) == 7 and sum(chunks) == len(source)
        copied = {int(i): v for ids, xb in target.iter_vectors(batch=5) for i, v in zip(ids, xb)}
        for ids, xb in source.iter_vectors(batch=11):
            for item_id, vector in zip(ids.tolist(), xb):
                assert np.allclose(copied[item_id], vector, atol=1e-6)
        assert len(copied) == len(source)
        assert {m.id: m.label for m in target.iter_items()} == {m.id: m.label for m in source.iter_items()}
    finally:
        source.close()
        target.close()


def test_milvus_has_no_simsearch_maintenance(store):
    """Milvus keeps its own log and compacts itself: it is no ``Maintainable`` (no log head, no snapshot, no
    pretended rebuild), only asked to compact, and says so."""
    assert isinstance(store, VectorStore) and not isinstance(store, Maintainable)
    assert isinstance(store, ServerCompacted)
    assert not hasattr(store, "log_head") and not hasattr(store, "snapshot") and not hasattr(store, "compact")
    said = store.request_compaction()
    assert "requested" in said and "rebuil" not in said


def test_bounded_consistency_is_a_milvus_keyword(store):
    xb = vectors(10)
    ids = store.add(xb, labels=["a"] * 10, paths=["/p"] * 10)
    assert store.search(xb[:1], 1, consistency="Bounded")[0][0].id in ids.tolist()  # may lag, never wrong
    with pytest.raises(TypeError):
        store.search(xb[:1], 1, fresh=False)
    with pytest.raises(ValueError, match="consistency"):
        store.search(xb[:1], 1, consistency="Eventually")


def test_an_insert_applied_then_timed_out_leaves_no_item(store, monkeypatch):
    """A chunk whose insert reached Milvus but whose answer timed out is deleted too: an upload answered 503
    must leave no ghost item (its file is deleted)."""
    from pymilvus.exceptions import MilvusException

    import index.milvus.store as milvus_store

    monkeypatch.setattr(milvus_store, "INSERT_ROWS", 4)  # 10 rows: chunks of 4, 4 and 2
    real_insert = store._client.insert
    calls = []

    def insert_then_time_out(*args, **kwargs):
        calls.append(len(args[1]))
        result = real_insert(*args, **kwargs)
        if len(calls) == 2:  # the second chunk is applied, then its answer is lost
            raise MilvusException(message="rpc error: Deadline Exceeded (timeout)")
        return result

    monkeypatch.setattr(store._client, "insert", insert_then_time_out)
    xb = vectors(10, seed=3)
    with pytest.raises(IndexUnavailableError, match="unavailable"):
        store.add(xb, labels=["ghost"] * 10, paths=[f"/ghost/{i}.png" for i in range(10)])
    assert calls == [4, 4]
    monkeypatch.undo()
    assert len(store) == 0 and store.label_counts() == {}
    assert store.search(xb[4:8], 1) == [[], [], [], []]  # the applied chunk is gone too


def test_a_rare_class_gets_exactly_the_k_exact_hits(store):
    """A label filter on an HNSW collection keeps its promise for a 0.5% class: ``k`` hits, the exact ones
    (Milvus searches a selective filter by brute force over the rows that pass it)."""
    n, rare = 10_000, 50
    xb = vectors(n, seed=11)
    labels = np.array(["common"] * n, dtype=object)
    labels[np.random.default_rng(5).choice(n, rare, replace=False)] = "rare"
    store.add(xb, labels=list(labels), paths=[f"/p/{i}.png" for i in range(n)])
    store.flush()  # sealed segments, searched through their HNSW index
    ids, stored = store.all_vectors()
    mine = {item.id for item in store.iter_items() if item.label == "rare"}
    keep = np.array([int(i) in mine for i in ids])
    xq = vectors(20, seed=99)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    order = np.argsort(-(xq @ stored[keep].T), axis=1, kind="stable")[:, :10]
    results = store.search(xq, 10, label="rare")
    assert all(len(hits) == 10 and {h.label for h in hits} == {"rare"} for hits in results)
    assert [[h.id for h in hits] for hits in results] == ids[keep][order].tolist()


def test_label_counts_count_per_label_without_reading_every_item(store, monkeypatch):
    """The labels ever added are a collection property; label_counts asks one count per label and finds a
    label missing from the property (two writers at once, or a collection made before it) with one query."""
    store.add(vectors(30), labels=["a"] * 10 + ["b"] * 20, paths=["/p"] * 30)
    store.remove(store.live_ids()[:1])
    expected = store.scan_label_counts()
    assert sum(expected.values()) == 29
    monkeypatch.setattr(store, "_iterate", lambda fields: pytest.fail("label_counts read every item"))
    assert store.label_counts() == expected
    store._client.alter_collection_properties(store._location.collection, properties={"simsearch.labels": '["a"]'})
    assert store.label_counts() == expected  # "b" found again, and recorded
    assert store._recorded_labels() == {"a", "b"}
    store.add(vectors(2, seed=1), labels=['say "c"', "a"], paths=["/q", "/r"])
    assert store.label_counts() == {**expected, "a": expected["a"] + 1, 'say "c"': 1}

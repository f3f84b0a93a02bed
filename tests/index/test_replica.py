"""Replicas and aliases (issue 25): the :class:`index.base.Replicable` contract and the :class:`index.alias.Alias`
contract, each on both kinds of store: an index directory (``IndexStore``) and a Milvus collection on the
session's ``milvus-lite server``."""

from __future__ import annotations

import numpy as np
import pytest

from index import IndexConfig, IndexStore, IndexStoreError, IndexSupersededError, ItemMeta, ReplicaState, Replicable
from index.alias import Alias, create_alias, open_alias, previous_target, resolve
from index.location import create_store, open_store
from tests.index.conftest import model_info, vectors

DIM = 16
MODEL = model_info(DIM)
FLAT = IndexConfig(index_type="flat", auto_snapshot=False)
SOURCE = ReplicaState("/indexes/new-model", 7)


def source_items(n: int, first: int = 0) -> list[ItemMeta]:
    """``n`` items with small ids from ``first`` on (as an index directory numbers them), each its own time."""
    return [ItemMeta(first + i, f"/img/{first + i}.png", f"class{i % 3}", 1_700_000_000.5 + i,
                     "upload" if i % 2 else None) for i in range(n)]


@pytest.fixture(params=["embedded", "milvus"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def new_store(kind, tmp_path, request):
    """``new(name)``: an empty flat store of ``kind`` (closed after the test)."""
    made = []

    def new(name: str = "idx"):
        if kind == "embedded":
            store = IndexStore.create(tmp_path / name, DIM, config=FLAT, model_info=MODEL)
        else:
            location, home = request.getfixturevalue("new_milvus_index")(name)
            store = create_store(location, DIM, config=FLAT, model_info=MODEL, home=str(home))
        made.append(store)
        return store

    yield new
    for store in made:
        store.close()


@pytest.fixture
def replica(new_store):
    store = new_store("replica")
    store.set_replica_state(SOURCE)
    return store


# ---------------------------------------------------------------------- Replicable
def test_a_replica_refuses_ordinary_writes_and_takes_replicate(replica):
    assert isinstance(replica, Replicable) and replica.replica_state() == SOURCE
    with pytest.raises(IndexSupersededError) as err:
        replica.add(vectors(2, dim=DIM), labels=["a", "b"], paths=["/a.png", "/b.png"])
    assert err.value.successor == SOURCE.location and SOURCE.location in str(err.value)
    assert len(replica) == 0  # nothing written
    items = source_items(5)
    assert replica.replicate(vectors(5, dim=DIM), items, state=ReplicaState(SOURCE.location, 9)) == (5, 0)
    assert replica.replica_state() == ReplicaState(SOURCE.location, 9)
    with pytest.raises(IndexSupersededError):
        replica.remove([0, 1])
    assert len(replica) == 5 and replica.stats()["replica_of"] == {"location": SOURCE.location, "seq": 9}


def test_replicate_keeps_ids_labels_paths_times_and_sources(replica):
    xb = vectors(6, seed=3, dim=DIM)
    items = source_items(6, first=40)
    replica.replicate(xb, items)
    got = replica.get_many([m.id for m in items])
    for item in items:
        meta = got[item.id]
        assert (meta.id, meta.label, meta.path, meta.source) == (item.id, item.label, item.path, item.source)
        assert meta.added_at == pytest.approx(item.added_at, abs=1e-6)
    np.testing.assert_allclose(replica.reconstruct(42), xb[2] / np.linalg.norm(xb[2]), atol=1e-6)
    assert replica.search(xb[:1], 1)[0][0].id == 40


def test_replicate_twice_is_idempotent(replica):
    xb, items = vectors(8, dim=DIM), source_items(8)
    assert replica.replicate(xb[:5], items[:5]) == (5, 0)
    # a rerun after a crash half-way: the first five again, with three new ones
    assert replica.replicate(xb, items, state=SOURCE) == (3, 0)
    assert replica.replicate(xb, items, state=SOURCE) == (0, 0)
    assert len(replica) == 8 and replica.live_ids().tolist() == list(range(8))  # no id stored twice
    twice = ItemMeta(50, "/50.png", "c", 1.0)
    assert replica.replicate(xb[:2], [twice, twice]) == (1, 0) and len(replica) == 9  # the first one, once
    with pytest.raises(ValueError):
        replica.replicate(xb[:3], items[:2])


def test_replicate_applies_deletes(replica):
    replica.replicate(vectors(6, dim=DIM), source_items(6))
    assert replica.replicate(np.zeros((0, DIM), np.float32), [], deleted=[1, 4, 999]) == (0, 2)
    assert replica.replicate(np.zeros((0, DIM), np.float32), [], deleted=[1, 4]) == (0, 0)
    assert replica.live_ids().tolist() == [0, 2, 3, 5] and replica.get(1) is None
    # adds and deletes of one step together
    added, deleted = replica.replicate(vectors(2, seed=5, dim=DIM), source_items(2, first=10), deleted=[0],
                                       state=ReplicaState(SOURCE.location, 12))
    assert (added, deleted) == (2, 1) and replica.live_ids().tolist() == [2, 3, 5, 10, 11]
    assert replica.replica_state().seq == 12


def test_primary_again_takes_writes_above_every_replicated_id(replica):
    replica.replicate(vectors(4, dim=DIM), source_items(4, first=100))
    replica.set_replica_state(None)
    assert replica.replica_state() is None and replica.stats()["replica_of"] is None
    new = replica.add(vectors(3, seed=9, dim=DIM), labels=["x"] * 3, paths=["/x.png"] * 3)
    assert len(set(new.tolist())) == 3 and new.min() > 103
    assert [m.id for m in replica.remove([100])] == [100] and len(replica) == 6


def test_live_ids_is_sorted_int64(replica):
    ids = [9, 3, 250, 17, 0]
    replica.replicate(vectors(5, dim=DIM), [ItemMeta(i, f"/{i}.png", "c", 1.0) for i in ids])
    live = replica.live_ids()
    assert live.dtype == np.int64 and live.tolist() == sorted(ids)


def test_the_replica_state_is_durable_and_seen_by_every_process(new_store):
    store = new_store("shared")
    other = open_store(store.location)  # another opener (a server process)
    try:
        assert other.replica_state() is None
        store.set_replica_state(SOURCE)
        assert other.replica_state() == SOURCE  # read afresh, not cached at open
        with pytest.raises(IndexSupersededError):
            other.add(vectors(1, dim=DIM), labels=["a"], paths=["/a.png"])
        store.set_replica_state(None)
        assert len(other.add(vectors(1, dim=DIM), labels=["a"], paths=["/a.png"])) == 1
    finally:
        other.close()


def test_log_tail_of_an_index_directory(tmp_path):
    store = IndexStore.create(tmp_path / "src", DIM, config=FLAT, model_info=MODEL)
    try:
        old = store.add(vectors(5, dim=DIM), labels=["a"] * 5, paths=[f"/old/{i}.png" for i in range(5)])
        seq = store.log_head()
        assert store.log_tail(seq).added == [] and store.log_tail(seq).deleted == []
        new = store.add(vectors(3, seed=1, dim=DIM), labels=["b"] * 3, paths=[f"/new/{i}.png" for i in range(3)])
        store.remove([int(old[1]), int(new[0])])
        tail = store.log_tail(seq)
        assert tail.head == store.log_head()
        assert [m.id for m in tail.added] == sorted(new[1:].tolist())  # added since and still alive, by id
        assert [m.path for m in tail.added] == ["/new/1.png", "/new/2.png"]
        assert int(old[1]) in tail.deleted and int(new[1]) not in tail.deleted
        # compaction prunes the log it covers: a tail from before the floor is gone (the caller diffs the ids)
        store.snapshot()
        store.add(vectors(1, seed=2, dim=DIM), labels=["c"], paths=["/c.png"])
        store.snapshot()
        assert store.stats()["log_floor"] > 0
        assert store.log_tail(0) is None and store.log_tail(seq) is None
        assert store.log_tail(store.log_head()).added == []
    finally:
        store.close()


def test_milvus_has_no_log_tail(new_milvus_index):
    location, home = new_milvus_index("tail")
    store = create_store(location, DIM, config=FLAT, model_info=MODEL, home=str(home))
    try:
        store.add(vectors(2, dim=DIM), labels=["a", "b"], paths=["/a.png", "/b.png"])
        assert store.log_tail(0) is None
    finally:
        store.close()


# ---------------------------------------------------------------------- aliases
@pytest.fixture
def alias_location(kind, tmp_path, request) -> str:
    if kind == "embedded":
        return str(tmp_path / "live")
    return request.getfixturevalue("new_milvus_index")("live")[0]


def test_alias_contract(new_store, alias_location):
    first, second = new_store("first"), new_store("second")
    alias = create_alias(alias_location, first.location)
    try:
        assert isinstance(alias, Alias) and alias.location == alias_location
        if alias.target() is None:  # an alias folder starts empty; a Milvus alias always names a collection
            alias.set(first.location, note="created")
        assert alias.target() == first.location and resolve(alias_location) == first.location
        before = alias.version()
        entry = alias.set(second.location, note="new model")
        assert (entry.target, entry.note, entry.forced) == (second.location, "new model", False)
        assert alias.target() == second.location and alias.version() != before
        assert previous_target(alias) == first.location
        alias.set(first.location, note="rollback", forced=True)
        history = alias.history()
        assert [(e.target, e.note) for e in history] == [(first.location, "created"), (second.location, "new model"),
                                                         (first.location, "rollback")]
        assert [e.seq for e in history] == sorted(e.seq for e in history) and history[-1].forced
        assert history[0].at <= history[1].at <= history[2].at
        assert previous_target(alias) == second.location
    finally:
        alias.close()
    again = open_alias(alias_location)  # another process's view of it
    try:
        assert again.target() == first.location and len(again.history()) == 3
    finally:
        again.close()
    assert open_alias(first.location) is None and resolve(first.location) == first.location


def test_a_plain_collection_or_unknown_name_is_no_milvus_alias(new_milvus_index, tmp_path):
    location, home = new_milvus_index("plain")
    store = create_store(location, DIM, config=FLAT, model_info=MODEL, home=str(home))
    store.close()
    assert open_alias(location) is None
    assert open_alias(new_milvus_index("nothing")[0]) is None
    assert open_alias(str(tmp_path / "vectors.db")) is None  # Milvus Lite has no aliases
    assert open_alias(str(tmp_path / "no-such-folder")) is None


@pytest.fixture
def milvus_alias(new_milvus_index):
    stores = []
    for name in ("a", "b"):
        location, home = new_milvus_index(name)
        stores.append(create_store(location, DIM, config=FLAT, model_info=MODEL, home=str(home)))
    location = new_milvus_index("live")[0]
    alias = create_alias(location, stores[0].location)
    yield alias, stores
    alias.close()
    for store in stores:
        store.close()


def test_a_milvus_alias_names_only_a_simsearch_collection_of_its_server(milvus_alias, new_milvus_index, tmp_path):
    alias, (first, _) = milvus_alias
    port = first.location.rsplit(":", 1)[1].split("/")[0]
    refused = {f"milvus://127.0.0.2:{port}/other": "own server",  # the same port on another host
               str(tmp_path / "index"): "own server", str(tmp_path / "vectors.db"): "own server",
               new_milvus_index("missing")[0]: "no such collection",
               alias.location: "is an alias"}
    for target, why in refused.items():
        with pytest.raises(IndexStoreError, match=why):
            alias.set(target)
    assert alias.target() == first.location and len(alias.history()) == 1
    with pytest.raises(IndexStoreError, match="already names"):
        create_alias(alias.location, first.location)
    with pytest.raises(IndexStoreError, match="already names"):
        create_alias(first.location, first.location)


def test_a_store_opened_through_a_milvus_alias_is_the_collection_named_then(milvus_alias):
    alias, (first, second) = milvus_alias
    store = open_store(alias.location)
    try:
        assert store.location == first.location
        alias.set(second.location)
        store.add(vectors(1, dim=DIM), labels=["a"], paths=["/a.png"])  # still into the first collection
        assert (len(first), len(second)) == (1, 0)
    finally:
        store.close()


def test_a_milvus_switch_made_outside_simsearch_shows_in_the_history(milvus_alias):
    from index.milvus.alias import UNRECORDED

    alias, (first, second) = milvus_alias
    collection = second.location.rsplit("/", 1)[1]
    alias._client.alter_alias(collection, alias.location.rsplit("/", 1)[1])  # as another tool (or a crash) leaves it
    history = alias.history()
    assert [(e.target, e.note) for e in history] == [(first.location, "created"), (second.location, UNRECORDED)]
    alias.set(first.location, note="back")
    assert [e.target for e in alias.history()] == [first.location, second.location, first.location]
    assert previous_target(alias) == second.location

"""The model lifecycle on real indexes and two really trained models: re-embed behind a live index, writes made
meanwhile carried over, an alias switched and rolled back without losing a write, and a server process that
follows the alias (:mod:`engine.lifecycle`, :mod:`engine.live`)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.engine import Engine
from engine.lifecycle import Replicator, alias_status, location_key, reembed, switch
from engine.live import LiveEngine
from index import IndexStoreError, IndexSupersededError
from index.alias import open_alias, resolve
from index.location import open_store

from tests.conftest import tiny_config


@pytest.fixture(scope="session")
def second_checkpoint(fmnist_small, tmp_path_factory) -> str:
    """Another small CNN, trained with another seed: a different model of the same images."""
    from similarity.train import train

    out = tmp_path_factory.mktemp("run2")
    return train(fmnist_small, tiny_config(seed=7, epochs=1), out, progress=False).checkpoint_path


def _items(location: str) -> dict[int, tuple]:
    store = open_store(location)
    try:
        return {m.id: (m.label, os.path.basename(m.path), round(m.added_at, 3), m.source) for m in store.iter_items()}
    finally:
        store.close()


def _png(fmnist_folder, i: int) -> bytes:
    return Path(fmnist_folder.paths[i]).read_bytes()


def test_reembed_keeps_every_item_and_embeds_with_the_new_model(index_copy, second_checkpoint, tmp_path,
                                                                fmnist_folder):
    out = str(tmp_path / "v2")
    summary = reembed(index_copy, second_checkpoint, out, progress=False, chunk=128)
    assert summary.items == len(fmnist_folder) and not summary.resumed and summary.copied == len(fmnist_folder)
    assert _items(out) == _items(index_copy)
    new = Engine.open(out)
    try:
        assert new.checkpoint.sha256 != Engine.open(index_copy).checkpoint.sha256
        item = new.get(5)
        expected = new.embed([item.path])[0]
        np.testing.assert_allclose(new.store.reconstruct(5), expected, atol=1e-5)
        state = new.store.replica_state()
        assert state is not None and state.location == location_key(index_copy)
        with pytest.raises(IndexSupersededError):  # a replica takes no ordinary writes
            new.add_image(_png(fmnist_folder, 0), "x")
    finally:
        new.close()


def test_writes_during_and_after_the_reembed_reach_the_new_index_and_deletes_stay_deleted(
        index_copy, second_checkpoint, tmp_path, fmnist_folder):
    alias = str(tmp_path / "live")
    switch(alias, index_copy)
    old = Engine.open(index_copy)
    out = str(tmp_path / "v2")
    added_during: list[int] = []
    original = Replicator.add

    def add_with_writes(self, items, **kwargs):  # a server writes to the old index while the re-embed runs
        added_during.append(old.add_image(_png(fmnist_folder, len(added_during)), "during").item.id)
        old.delete([len(added_during)])  # items 1, 2, ...: already copied or not yet, both must end deleted
        return original(self, items, **kwargs)

    Replicator.add = add_with_writes
    try:
        reembed(alias, second_checkpoint, out, progress=False, chunk=100)
    finally:
        Replicator.add = original
    after = old.add_image(_png(fmnist_folder, 9), "after-reembed").item.id  # before the switch
    old.delete([300])
    old.close()
    result = switch(alias, out)
    assert resolve(alias) == location_key(out) and result.caught_up.added >= 1
    old_items, new_items = _items(index_copy), _items(out)
    assert new_items == old_items
    for item_id in [*added_during, after]:
        assert item_id in new_items
    for gone in [*range(1, len(added_during) + 1), 300]:
        assert gone not in new_items
    with pytest.raises(IndexSupersededError):  # the old index is sealed: a replica of the new one
        Engine.open(index_copy).add_image(_png(fmnist_folder, 0), "x")


def test_rollback_carries_the_writes_made_since_the_switch(index_copy, second_checkpoint, tmp_path, fmnist_folder):
    alias = str(tmp_path / "live")
    switch(alias, index_copy)
    out = str(tmp_path / "v2")
    reembed(alias, second_checkpoint, out, progress=False)
    switch(alias, out)
    new = Engine.open(alias)
    added = new.add_image(_png(fmnist_folder, 3), "after-switch").item
    new.delete([10])
    new.close()
    back = switch(alias, previous=True)
    assert back.target == location_key(index_copy) and resolve(alias) == location_key(index_copy)
    items = _items(index_copy)
    assert added.id in items and 10 not in items and items == _items(out)
    history = open_alias(alias).history()
    assert [e.target for e in history] == [location_key(index_copy), location_key(out), location_key(index_copy)]
    assert history[-1].note == "rollback"
    status = alias_status(alias)
    assert status["target"] == location_key(index_copy) and status["previous"] == location_key(out)
    assert status["indexes"][location_key(out)]["replica_of"]["location"] == location_key(index_copy)
    # and forward again: the rolled-back index took writes, the other one catches up
    again = Engine.open(alias)
    later = again.add_image(_png(fmnist_folder, 4), "after-rollback").item.id
    again.close()
    switch(alias, out)
    assert later in _items(out)


def test_a_killed_reembed_resumes_without_duplicates(index_copy, second_checkpoint, tmp_path):
    out = str(tmp_path / "v2")
    original = Replicator.add
    calls = []

    def dies_on_the_third_step(self, items, **kwargs):
        calls.append(len(items))
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill: the steps before are durable, this one never happens
        return original(self, items, **kwargs)

    Replicator.add = dies_on_the_third_step
    try:
        with pytest.raises(KeyboardInterrupt):
            reembed(index_copy, second_checkpoint, out, progress=False, chunk=100)
    finally:
        Replicator.add = original
    assert len(_items(out)) == 200
    summary = reembed(index_copy, second_checkpoint, out, progress=False, chunk=100)
    assert summary.resumed and summary.copied == len(_items(index_copy)) - 200
    assert _items(out) == _items(index_copy)


def test_switch_refuses_an_unrelated_index_unless_forced(index_copy, built_index, tmp_path):
    alias = str(tmp_path / "live")
    switch(alias, index_copy)
    with pytest.raises(IndexStoreError, match="not a replica"):
        switch(alias, built_index)
    assert resolve(alias) == location_key(index_copy)
    forced = switch(alias, built_index, force=True)
    assert forced.entry.forced and resolve(alias) == location_key(built_index)
    with pytest.raises(ValueError, match="alias"):
        switch(str(tmp_path / "other"), alias)  # an alias names an index, not an alias


def test_a_process_following_the_alias_moves_and_retries_a_write_refused_by_the_seal(
        index_copy, second_checkpoint, tmp_path, fmnist_folder):
    alias = str(tmp_path / "live")
    switch(alias, index_copy)
    out = str(tmp_path / "v2")
    reembed(alias, second_checkpoint, out, progress=False)
    live = LiveEngine(alias, poll_s=0.05)
    try:
        old_engine = live.engine
        assert live.target == location_key(index_copy)
        switch(alias, out)
        # the write goes to the engine still in use (sealed now), is refused, waits for the move, runs again
        result = live.write(lambda engine: engine.add_image(_png(fmnist_folder, 2), "during-switch"))
        assert live.engine is not old_engine and live.target == location_key(out) and live.switches == 1
        assert result.item.id in _items(out)
        assert os.path.dirname(result.item.path) == os.path.join(location_key(out), "uploads")
        switch(alias, previous=True)
        deadline = time.monotonic() + 10
        while live.engine is not old_engine and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.engine is old_engine  # the previous engine was kept open: a rollback swaps back at once
        assert result.item.id in _items(index_copy)
    finally:
        live.close()


def test_concurrent_writers_lose_nothing_across_a_switch(index_copy, second_checkpoint, tmp_path, fmnist_folder):
    alias = str(tmp_path / "live")
    switch(alias, index_copy)
    out = str(tmp_path / "v2")
    reembed(alias, second_checkpoint, out, progress=False)
    live = LiveEngine(alias, poll_s=0.05)
    acknowledged: list[int] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                acknowledged.append(live.write(
                    lambda engine: engine.add_image(_png(fmnist_folder, offset + i), f"w{offset}")).item.id)
            except Exception as exc:  # noqa: BLE001 - recorded and asserted below
                errors.append(exc)
            i += 1

    threads = [threading.Thread(target=writer, args=(n * 50,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        switch(alias, out)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        live.close()
    assert not errors and len(acknowledged) > 4
    assert set(acknowledged) <= set(_items(out))


def test_the_lifecycle_on_milvus_through_its_native_alias(built_index, new_milvus_index, second_checkpoint,
                                                          fmnist_folder, backend):
    from engine.build import copy_index

    if backend != "embedded":
        pytest.skip("built_index is a collection already: this test copies the embedded one into Milvus itself")
    v1, v1_home = new_milvus_index("life_v1")
    copy_index(built_index, v1, home=str(v1_home), progress=False)
    alias = v1.rsplit("/", 1)[0] + "/" + v1.rsplit("/", 1)[1].replace("life_v1", "life_alias")
    switch(alias, v1)
    assert resolve(alias) == v1 and open_alias(alias).history()[-1].target == v1
    v2, v2_home = new_milvus_index("life_v2")
    live = LiveEngine(alias, poll_s=0.05)
    try:
        summary = reembed(alias, second_checkpoint, v2, home=str(v2_home), progress=False)
        assert summary.items == len(fmnist_folder)
        added = live.write(lambda engine: engine.add_image(_png(fmnist_folder, 1), "during")).item.id
        gone = sorted(_items(v1))[7]
        live.write(lambda engine: engine.delete([gone]))
        switch(alias, v2, sweep_s=0.2)
        new_items = _items(v2)
        assert new_items == _items(v1) and added in new_items and gone not in new_items
        with pytest.raises(IndexSupersededError):  # the collection the alias left is sealed
            Engine.open(v1).add_image(_png(fmnist_folder, 0), "x")
        after = live.write(lambda engine: engine.add_image(_png(fmnist_folder, 2), "after")).item.id
        assert live.target == v2 and after in _items(v2)
        switch(alias, previous=True, sweep_s=0.2)
        assert resolve(alias) == v1 and after in _items(v1)
        assert [e.target for e in open_alias(alias).history()][-3:] == [v1, v2, v1]
    finally:
        live.close()


def test_a_switch_the_evaluation_found_worse_is_refused_unless_forced(index_copy, second_checkpoint, tmp_path):
    import json

    from engine.evaluate import VERDICTS_DIR, WORSE
    from durablefile import file_sha256

    alias = str(tmp_path / "live")
    switch(alias, index_copy)
    out = str(tmp_path / "v2")
    reembed(alias, second_checkpoint, out, progress=False)
    old_sha = open_store(index_copy).model_info["checkpoint_sha256"]
    record = {"verdict": WORSE, "verdict_reason": "kNN accuracy -4.0 points, 95% CI [-6.1, -1.9]",
              "new": {"model_sha256": file_sha256(os.path.join(out, "model.pt"))}, "old": {"model_sha256": old_sha}}
    os.makedirs(os.path.join(out, VERDICTS_DIR))
    Path(out, VERDICTS_DIR, f"{old_sha}.json").write_text(json.dumps(record))
    with pytest.raises(IndexStoreError, match="worse.*-4.0 points"):
        switch(alias, out)
    assert resolve(alias) == location_key(index_copy)
    Engine.open(index_copy).close()  # the refused switch sealed nothing: the old index still takes writes
    assert open_store(index_copy).replica_state() is None
    assert switch(alias, out, force=True).entry.forced and resolve(alias) == location_key(out)

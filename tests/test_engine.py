"""The engine's file handling around the store: uploads, orphans, and paths reached through a symlink."""

from __future__ import annotations

import os

import pytest

from engine.engine import Engine


@pytest.mark.embedded_only
def test_compaction_keeps_referenced_uploads_when_the_index_is_reached_through_a_symlink(index_copy, sample_png,
                                                                                          tmp_path):
    engine = Engine.open(index_copy)
    try:
        item = engine.add_image(sample_png.read_bytes(), "Bag").item
    finally:
        engine.close()
    stray = os.path.join(index_copy, "uploads", "0123456789abcdef0123456789abcdef.png")  # a crash's leftover
    with open(stray, "wb") as handle:
        handle.write(sample_png.read_bytes())
    link = tmp_path / "link"
    link.symlink_to(index_copy)  # the same index under another path (a symlink, a move, a restore)
    other = Engine.open(link)
    try:
        assert other.orphan_uploads() == [os.path.basename(stray)]
        assert other.compact(orphan_grace_s=0.0)["orphans_removed"] == 1
        assert not os.path.exists(stray) and os.path.isfile(item.path)  # the referenced upload stays
        assert [gone.id for gone in other.delete([item.id])] == [item.id]
        assert not os.path.exists(item.path)  # recognised as an upload through the symlink, and removed
    finally:
        other.close()


def test_young_orphans_are_kept_for_an_add_in_flight(index_copy, sample_png):
    engine = Engine.open(index_copy)
    try:
        os.makedirs(os.path.join(engine.directory, "uploads"), exist_ok=True)  # the index's home
        fresh = os.path.join(engine.directory, "uploads", "fedcba9876543210fedcba9876543210.png")
        with open(fresh, "wb") as handle:
            handle.write(sample_png.read_bytes())
        assert engine.compact()["orphans_removed"] == 0 and os.path.exists(fresh)  # default grace: 5 min
        assert engine.compact(orphan_grace_s=0.0)["orphans_removed"] == 1
    finally:
        engine.close()


def test_compaction_and_log_head_say_what_the_store_does(index_copy):
    """An index directory compacts into a snapshot and has a log head; Milvus is only asked to compact (no
    pretended rebuild) and has no simsearch log head ("not applicable": None)."""
    from index import Maintainable

    engine = Engine.open(index_copy)
    try:
        result = engine.compact()
        assert result["backend"] == engine.store.backend and result["orphans_removed"] == 0
        if isinstance(engine.store, Maintainable):
            assert engine.log_head() == engine.store.log_head() >= 1
            assert set(result["index"]) >= {"rebuilt", "reason", "snapshot_gen", "snapshot_seq"}
        else:
            assert engine.log_head() is None
            assert set(result["index"]) == {"requested"} and "compaction" in result["index"]["requested"]
    finally:
        engine.close()

"""SIGKILL the whole server at random moments during adds and deletes, and during compactions."""

from __future__ import annotations

from bench.reliability.crash import check_on_disk, interrupted_write, Ledger, run_crash_trials
from bench.reliability.soak import verify_items
from index import IndexStore

KILLS, COMPACTION_KILLS = 3, 2  # the bench kills 20 + 10 times: python -m bench.reliability


def test_every_acknowledged_write_survives_sigkill(start_server, index_copy, token):
    summary, ledger = run_crash_trials(index_copy, token, kills=KILLS, compaction_kills=COMPACTION_KILLS, seed=3,
                                       min_delay_s=1.0, max_delay_s=2.5)

    assert summary["problems"] == []
    assert summary["kills_survived"] == KILLS + COMPACTION_KILLS and summary["lost_items"] == 0
    assert summary["compactions_running_at_kill"] >= 1 and summary["orphan_uploads_after_compaction"] == 0
    assert summary["acknowledged_adds_live"] > 0 and summary["acknowledged_deletes"] > 0

    server = start_server()  # and the restarted server agrees with the disk
    live = {item_id: (label, None) for item_id, label in ledger.live.items()}
    assert verify_items(server.url, live, ledger.deleted) == []


def test_disk_check_catches_a_lost_add(index_copy):
    """The check itself must be able to fail: an acknowledged id that is not in the index is reported."""
    ledger = Ledger(live={10**9: "phantom"}, deleted={0})
    problems = check_on_disk(index_copy, ledger)
    assert any("acknowledged add 1000000000 is missing" in p for p in problems)
    assert any("acknowledged delete 0 is back" in p for p in problems)
    assert not interrupted_write(index_copy)


def test_disk_check_allows_an_unanswered_delete_either_way(index_copy):
    """A delete the kill cut off before its answer may have landed or not; it must not change the item."""
    store = IndexStore.open(index_copy)
    try:
        label = store.get(0).label
    finally:
        store.close()
    assert check_on_disk(index_copy, Ledger(in_doubt={0: label, 10**9: "gone"})) == []
    problems = check_on_disk(index_copy, Ledger(in_doubt={0: label + "-other"}))
    assert any("delete unanswered" in p for p in problems)

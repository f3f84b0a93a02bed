"""A concurrent soak on a real server (2 workers x 4 threads, 8 clients), then a restart."""

from __future__ import annotations

from bench.reliability.soak import run_soak, verify_items

SOAK_SECONDS = 15  # the bench runs 60 s: python -m bench.reliability


def test_soak_loses_nothing_and_resurrects_nothing(start_server, index_copy, token):
    server = start_server()
    summary, state = run_soak(server.url, token, seconds=SOAK_SECONDS, clients=8, seed=1)

    assert summary["errors"] == 0, summary["error_examples"]
    assert summary["resurrected_deletes"] == 0, summary["resurrected_examples"]
    assert summary["adds_not_found"] == 0, summary["adds_not_found_examples"]
    ops = summary["by_operation"]
    assert ops["add"] >= 20 and ops["delete"] >= 5 and ops["search"] >= 20 and ops["similar"] >= 1
    assert verify_items(server.url, state.live, state.deleted) == []

    server.stop()
    restarted = start_server()
    assert verify_items(restarted.url, state.live, state.deleted) == []
    assert token not in server.log() + restarted.log()

"""A concurrent soak on a real server (2 workers x 4 threads, 8 clients) while another process compacts the
index over and over, then a restart."""

from __future__ import annotations

import pytest

from bench.reliability.crash import kill_compactor, start_compactor
from bench.reliability.soak import run_soak, verify_items

SOAK_SECONDS = 15  # the bench runs 60 s: python -m bench.reliability


@pytest.mark.slow  # a soak: the slow tier (bash scripts/test.sh -m slow)
def test_soak_loses_nothing_and_resurrects_nothing(start_server, index_copy, token, tmp_path):
    server = start_server()
    compactor = start_compactor(index_copy, str(tmp_path / "compact.log"))
    try:
        summary, state = run_soak(server.url, token, seconds=SOAK_SECONDS, clients=8, seed=1)
    finally:
        assert kill_compactor(compactor), (tmp_path / "compact.log").read_text()[-2000:]  # it never crashed
    assert (tmp_path / "compact.log").read_text().count("compacted") >= 2

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

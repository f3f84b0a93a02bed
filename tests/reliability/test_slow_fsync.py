"""A slow disk under a real served index: every fsync stalls for seconds (an LD_PRELOAD shim,
``fsync_delay.c``).  Writers queue for the database up to the busy timeout, then fail cleanly (503 with
Retry-After, nothing stored); searches are not blocked by the stalled writer; a restart finds every
acknowledged add, with no temporary file and no orphan upload."""

from __future__ import annotations

import shutil

import pytest

from api.errors import INDEX_BUSY
from bench.reliability.faults import slow_fsync_trial

pytestmark = [pytest.mark.embedded_only,
              pytest.mark.skipif(shutil.which("gcc") is None, reason="the fsync shim is compiled with gcc")]

DELAY_MS = 3000


def test_writes_queue_then_fail_cleanly_and_reads_go_on(index_copy, tmp_path, start_server, token):
    result = slow_fsync_trial(index_copy, str(tmp_path), lambda d, **kw: start_server(d, workers=1, threads=8, **kw),
                              token=token, delay_ms=DELAY_MS, busy_timeout_s=1.0, writers=4)

    assert set(result["add_statuses"]) <= {201, 503} and result["add_statuses"].get(201, 0) >= 1
    assert result["add_statuses"].get(503, 0) >= 1, result  # the queue gave up after the busy timeout
    assert all(r["error"] == INDEX_BUSY and r["retry_after"] for r in result["refusals"])
    assert set(result["read_statuses"]) == {200} and result["searches"] >= 3
    assert result["search_ms_max"] < DELAY_MS  # no search waited for a stalled fsync
    assert result["found_after_recovery"] == len(result["acknowledged"])
    assert result["temp_files"] == [] and result["orphan_uploads"] == []

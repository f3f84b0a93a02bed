"""Disk faults under a real served index (gunicorn): a full disk (a size-limited tmpfs) answers 507 and a
read-only one 503, reads go on, health says why writes are refused, and after the fault clears a restarted server
finds every acknowledged add, with no temporary file and no orphan upload left.  Mounting needs root."""

from __future__ import annotations

import pytest

from api.errors import INDEX_FULL, INDEX_READ_ONLY
from bench.reliability.faults import disk_full_trial, mount_problem, read_only_trial, unmount

pytestmark = [pytest.mark.embedded_only,
              pytest.mark.skipif(mount_problem() is not None, reason=mount_problem() or "")]


@pytest.fixture
def disk(tmp_path):
    folder = str(tmp_path / "disk")
    yield folder
    unmount(folder)


def _start(start_server):
    return lambda index_dir: start_server(index_dir, workers=1, threads=2)


def test_full_disk_is_507_and_loses_nothing_acknowledged(built_index, disk, start_server, token):
    result = disk_full_trial(built_index, disk, _start(start_server), size_mb=5, token=token, adds=120)

    assert set(result["add_statuses"]) == {201, 507}, result["add_statuses"]
    assert result["add_statuses"][201] >= 1 and result["add_statuses"][507] >= 5
    assert set(result["read_statuses"]) == {200}  # reads go on throughout
    assert all(r["error"] == INDEX_FULL and r["request_id"] for r in result["refusals"])
    assert all(h["writable"] is False and h["write_problem"] == "the disk is full"
               for h in result["health_when_refused"])
    assert result["health_after_space_freed"]["writable"] is True
    assert result["found_after_recovery"] == len(result["acknowledged"])
    assert result["adds_after_recovery"] == {201: 2}
    assert result["temp_files"] == [] and result["orphan_uploads"] == []


def test_read_only_disk_is_503_with_reads_going_on(built_index, disk, start_server, token):
    result = read_only_trial(built_index, disk, _start(start_server), token=token, adds=3)

    assert result["add_statuses"] == {503: 3} and set(result["read_statuses"]) == {200}
    assert all(r["error"] == INDEX_READ_ONLY and r["request_id"] for r in result["refusals"])
    assert all(h["writable"] is False and h["write_problem"].startswith("the index folder is read-only")
               for h in result["health_when_refused"])
    assert result["health_before"]["writable"] is True and result["health_after"]["writable"] is True
    assert result["found_while_read_only"] == len(result["acknowledged"]) == 3
    assert result["found_after_recovery"] == 3 and result["adds_after_recovery"] == {201: 1}
    assert result["temp_files"] == [] and result["orphan_uploads"] == []

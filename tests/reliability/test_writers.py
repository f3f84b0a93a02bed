"""Every kind of writer at once on one index: the API (two gunicorn workers) adds and deletes while
``simsearch index add``, ``index remove`` and ``index compact`` run in other processes."""

from __future__ import annotations

import os
import shutil

import pytest

from bench.reliability.writers import WriterLedger, run_writers_trial, verify_on_disk, verify_on_workers


@pytest.fixture
def forty_images(fmnist_folder, tmp_path):
    """40 PNGs not in the index, in class folders (the fixture index holds the first 600 PNGs of
    ``fmnist_folder``; these are copies under new names, so they are new items with new paths)."""
    root = tmp_path / "more"
    for i in range(40):
        src = fmnist_folder.paths[i * 15]
        label = fmnist_folder.class_names[fmnist_folder.labels[i * 15]]
        os.makedirs(root / label, exist_ok=True)
        shutil.copyfile(src, root / label / f"more-{i}.png")
    return str(root)


def test_every_writer_at_once(start_server, index_copy, token, forty_images, ids):
    server = start_server()
    summary, ledger = run_writers_trial(index_copy, token, forty_images, remove_ids=ids[3:8], seed=1, server=server)
    assert summary["problems"] == [] and summary["writers_failed"] == 0
    assert summary["cli_added"] == 40 and summary["api_adds"] == 36 and summary["api_deletes"] == 12
    assert set(ids[3:8]) <= ledger.deleted
    server.stop()
    restarted = start_server()  # and after a restart
    assert verify_on_workers(restarted.url, ledger) == []


@pytest.mark.slow  # the harness's self-check: the slow tier (bash scripts/test.sh -m slow)
def test_the_checks_can_fail(start_server, index_copy, ids):
    """A phantom add and a delete that never happened are both reported, on the workers and on disk."""
    server = start_server()
    ledger = WriterLedger(live={10**9: "phantom"}, deleted={ids[0]})
    assert len(verify_on_workers(server.url, ledger, rounds=1)) == 2
    assert len(verify_on_disk(index_copy, ledger)) == 2

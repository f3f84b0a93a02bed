"""A real gunicorn server (two worker processes) serving an alias: the index is re-embedded with another model
while the API adds and deletes, a CLI add runs, the re-embed is SIGKILLed and resumed, and the alias is switched
and rolled back under those writes.  Every acknowledged write is in the index the alias names; no delete comes
back; no request fails; both workers move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bench.lifecycle import TOKEN, ApiWriter, check_writes, health_targets, reembed_with_kill, wait_for_workers
from bench.reliability.server import ServerProcess
from engine.lifecycle import location_key, switch
from tests.test_lifecycle import second_checkpoint  # noqa: F401 - the session fixture

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_served_alias_switches_and_rolls_back_under_writes_without_losing_one(
        index_copy, second_checkpoint, fmnist_folder, tmp_path, backend):  # noqa: F811
    if backend != "embedded":
        pytest.skip("the Milvus alias is exercised in tests/test_lifecycle.py")
    alias = str(tmp_path / "live")
    switch(alias, index_copy)
    images = [Path(p) for p in fmnist_folder.paths[:40]]
    out = str(tmp_path / "v2")
    with ServerProcess(alias, token=TOKEN, workers=2, threads=2, log_path=str(tmp_path / "server.log")) as server:
        writer = ApiWriter(server.url, images, pause_s=0.02)
        writer.start()
        csv = tmp_path / "more.csv"
        csv.write_text("path,label\n" + "".join(f"{p},cli\n" for p in fmnist_folder.paths[100:110]))
        cli = subprocess.run([sys.executable, "-m", "simsearch.cli", "index", "add", alias, "--data", str(csv),
                              "--quiet", "--runtime", "torch"], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert cli.returncode == 0, cli.stderr
        cli_answer = json.loads(cli.stdout)
        reembed = reembed_with_kill(alias, second_checkpoint, out, 0.0, chunk=64)
        assert reembed["killed"] and reembed["resumed"] and reembed["items_at_kill"] >= 64
        switch(alias, out)
        wait_for_workers(server.url, location_key(out))
        after_switch = len(writer.added)
        deadline = time.monotonic() + 60
        while len(writer.added) < after_switch + 5:  # writes land on the new index
            assert writer.is_alive() and time.monotonic() < deadline, writer.failures[-3:]
            time.sleep(0.05)
        rollback = switch(alias, previous=True)
        wait_for_workers(server.url, location_key(index_copy))
        writer.stop()
        assert set(health_targets(server.url).values()) == {location_key(index_copy)}
        r = requests.post(f"{server.url}/api/search?k=3", data=images[0].read_bytes(), timeout=30)
        assert r.status_code == 200 and len(r.json()["neighbors"]) == 3
    assert not writer.failures, writer.failures[:3]
    cli_ids = list(range(cli_answer["first_id"], cli_answer["last_id"] + 1))
    checked = check_writes(rollback.target, writer.added + cli_ids, writer.deleted)
    assert checked["missing_count"] == 0 and checked["deletes_back_count"] == 0, checked
    assert len(writer.added) > 10 and writer.deleted

"""A gunicorn worker that (re)starts while another process rewrites the index's snapshots must boot: a
worker that fails to boot exits with code 3, and gunicorn then halts the whole server."""

from __future__ import annotations

import os
import signal
import time

import requests

from bench.reliability.crash import kill_compactor, start_compactor


def _workers(master_pid: int) -> list[int]:
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as handle:
        return [int(pid) for pid in handle.read().split()]


def test_workers_restarted_during_compactions_boot(start_server, index_copy, tmp_path):
    log = tmp_path / "compact.log"
    compactor = start_compactor(index_copy, str(log))
    try:
        server = start_server()  # the first boot already overlaps the compactions
        items = requests.get(f"{server.url}/api/health", timeout=30).json()["items"]
        for _ in range(6):
            victim = _workers(server.proc.pid)[0]
            os.kill(victim, signal.SIGKILL)  # gunicorn starts a new worker, which opens the index
            deadline = time.monotonic() + 60
            while victim in _workers(server.proc.pid) or len(_workers(server.proc.pid)) < 2:
                assert server.alive() and time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.05)
            for _ in range(4):  # new connections reach both workers
                r = requests.get(f"{server.url}/api/health", headers={"Connection": "close"}, timeout=30)
                assert r.status_code == 200 and r.json()["items"] == items
    finally:
        assert kill_compactor(compactor), log.read_text()[-2000:]
    assert log.read_text().count("compacted") >= 2
    assert server.alive()

"""Several ``simsearch serve`` processes on one Milvus collection, and Milvus going away under them.

Runs in every test run (a ``milvus-lite server`` on 127.0.0.1, started by the fixtures), whatever
``--backend`` says: these are properties of the Milvus store only."""

from __future__ import annotations

import time

import pytest
import requests

from bench.milvus_servers import MilvusLiteServer
from bench.reliability.server import ServerProcess
from bench.reliability.shared import run_shared_trial
from engine.build import copy_index

TOKEN = "shared-milvus-token-77"


def test_two_api_servers_share_one_milvus(new_milvus_index, built_index, tmp_path):
    location, home = new_milvus_index("shared")
    copy_index(built_index, location, home=home, progress=False)
    servers = [ServerProcess(location, token=TOKEN, workers=1, threads=2, log_path=str(tmp_path / f"s{i}.log"))
               for i in range(2)]
    try:
        urls = [server.start().url for server in servers]
        assert urls[0] != urls[1]
        summary = run_shared_trial(urls, TOKEN, location, rounds=12, seed=3)
        assert summary["problems"] == [], summary
        assert summary["lost"] == 0 and summary["inconsistent"] == 0
        assert summary["adds"] == 12 and summary["deletes"] == 4
        counts = {requests.get(url + "/api/health", timeout=10).json()["items"] for url in urls}
        assert counts == {608}
    finally:
        for server in servers:
            server.stop()


@pytest.mark.slow  # the harness's self-check: the slow tier (bash scripts/test.sh -m slow)
def test_the_shared_check_can_fail(new_milvus_index, built_index, tmp_path):
    """Two servers on two different collections are not consistent, and the trial says so."""
    servers = []
    try:
        for name in ("left", "right"):
            location, home = new_milvus_index(name)
            copy_index(built_index, location, home=home, progress=False)
            servers.append(ServerProcess(location, token=TOKEN, workers=1, threads=2,
                                         log_path=str(tmp_path / f"{name}.log")).start())
        summary = run_shared_trial([s.url for s in servers], TOKEN, servers[0].index_dir, rounds=3)
        assert summary["lost"] >= 3 and summary["inconsistent"] >= 3
    finally:
        for server in servers:
            server.stop()


def test_milvus_down_is_503_and_the_server_recovers(built_index, tmp_path, sample_png):
    png_bytes = sample_png.read_bytes()
    milvus = MilvusLiteServer(tmp_path / "data", log_path=tmp_path / "milvus.log").start()
    location = f"milvus://127.0.0.1:{milvus.port}/outage"
    api = None
    try:
        copy_index(built_index, location, home=tmp_path / "home", progress=False)
        api = ServerProcess(location, token=TOKEN, workers=1, threads=2, log_path=str(tmp_path / "api.log"),
                            env={"SIMSEARCH_MILVUS_TIMEOUT_S": "3"}).start()
        search = api.url + "/api/search?k=3"
        assert requests.post(search, data=png_bytes, headers={"Content-Type": "image/png"}, timeout=30).ok
        milvus.kill()
        started = time.monotonic()
        down = requests.post(search, data=png_bytes, headers={"Content-Type": "image/png"}, timeout=60)
        assert down.status_code == 503 and "unavailable" in down.json()["error"], down.text
        assert down.headers.get("Retry-After") and time.monotonic() - started < 30
        added = requests.post(api.url + "/api/images", data={"label": "while down"}, timeout=60,
                              files={"image": ("a.png", png_bytes, "image/png")},
                              headers={"Authorization": f"Bearer {TOKEN}"})
        assert added.status_code == 503 and "error" in added.json()
        assert "Traceback" not in api.log()
        milvus.start()  # same data directory, same port
        deadline = time.monotonic() + 60
        while True:
            back = requests.post(search, data=png_bytes, headers={"Content-Type": "image/png"}, timeout=60)
            if back.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert back.status_code == 200 and len(back.json()["neighbors"]) == 3
        assert requests.get(api.url + "/api/health", timeout=30).json()["items"] == 600  # the failed add left nothing
    finally:
        if api is not None:
            api.stop()
        milvus.stop()

"""``simsearch serve``: argument parsing, refusing bad indexes, and a real gunicorn server on loopback."""

from __future__ import annotations

import argparse
import os
import re
import shutil

import pytest
import requests

from apitest_helpers import TOKEN
from bench.reliability.server import ServerProcess
from engine.build import index_home
from simsearch import cmd_serve


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simsearch")
    cmd_serve.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_parser_defaults_and_options():
    args = parse(["serve", "--index", "/x"])
    assert (args.host, args.port, args.workers, args.threads, args.dev) == ("127.0.0.1", 8000, 2, 4, False)
    assert args.token_env is None and args.func is cmd_serve.run  # run() falls back to api.config.TOKEN_ENV
    assert args.max_k is None and args.max_upload_mb is None  # run() falls back to ApiConfig's defaults
    args = parse(["serve", "--index", "/x", "--checkpoint", "c.pt", "--port", "9001", "--workers", "3",
                  "--threads", "2", "--dev", "--token-env", "MY_TOKEN"])
    assert (args.checkpoint, args.port, args.workers, args.threads, args.dev, args.token_env) == \
        ("c.pt", 9001, 3, 2, True, "MY_TOKEN")
    with pytest.raises(SystemExit):
        parse(["serve"])


def test_refuses_missing_index_and_checkpoint(tmp_path, capsys, index_copy):
    assert cmd_serve.run(parse(["serve", "--index", str(tmp_path / "nope")])) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cmd_serve.run(parse(["serve", "--index", str(tmp_path / "empty")])) == 2
    assert "not an index directory" in capsys.readouterr().err
    os.remove(os.path.join(index_home(index_copy), "model.pt"))
    assert cmd_serve.run(parse(["serve", "--index", index_copy])) == 2
    assert "model.pt" in capsys.readouterr().err


def test_refuses_mismatched_checkpoint(tmp_path, capsys, index_copy):
    other = tmp_path / "other.pt"
    shutil.copyfile(os.path.join(index_home(index_copy), "model.pt"), other)
    with open(other, "ab") as handle:  # same weights, different bytes: another checkpoint as far as the index knows
        handle.write(b"\0")
    assert cmd_serve.run(parse(["serve", "--index", index_copy, "--checkpoint", str(other)])) == 2
    assert "cannot serve" in capsys.readouterr().err


def test_real_gunicorn_server(index_copy, png_bytes, tmp_path, ids):
    server = ServerProcess(index_copy, token=TOKEN, workers=2, threads=2, log_path=str(tmp_path / "server.log"),
                           log_level="info", extra_args=("--runtime", "onnx"))
    url = server.start().url
    try:
        with requests.Session() as http:
            r = http.post(url + "/api/search?k=5", files={"image": ("q.png", png_bytes, "image/png")}, timeout=30)
            assert r.status_code == 200 and r.json()["neighbors"][0]["id"] == ids[0]
            assert http.post(url + "/api/search?k=abc", data=png_bytes, timeout=30).status_code == 400
            added = http.post(url + "/api/images", files={"image": ("n.png", png_bytes, "image/png")},
                              data={"label": "Served"}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            assert added.status_code == 201, added.text
            new_id = added.json()["id"]
            # both workers (separate processes) must see the add: ask enough times to reach each of them
            pids = set()
            for _ in range(20):
                info = http.get(f"{url}/api/images/{new_id}/info", timeout=10)
                assert info.status_code == 200 and info.json()["label"] == "Served"
                pids.add(http.get(url + "/api/health", timeout=10).json()["pid"])
            metrics = http.get(url + "/metrics", timeout=10).text
            count = re.search(r'simsearch_http_requests_total\{endpoint="/api/images/<int:item_id>/info",'
                              r'method="GET",status="200"\} (\d+)', metrics)
            assert count and float(count.group(1)) == 20  # summed over the workers (multiprocess mode)
            assert http.get(url + "/", timeout=10).status_code == 200
    finally:
        server.stop()
    out = server.log()
    assert "serving" in out and f"127.0.0.1:{server.port}" in out
    assert TOKEN not in out
    # a graceful stop: each worker leaves cleanly (no native abort in a forked worker) and the master exits 0
    assert out.count("Worker exiting") == 2 and "Shutting down: Master" in out
    assert "terminate called" not in out and "SIGABRT" not in out and "SIGKILL" not in out
    assert server.proc.returncode == 0

"""The query log (``api.querylog``): sampled searches saved within a size cap, read back for ``simsearch
evaluate --from-log``, and never the cause of a failed search."""

from __future__ import annotations

import argparse
import json
import logging
import io
import os
from pathlib import Path

import pytest

from api import ApiConfig, SearchService, create_app
from api.querylog import SIDECAR_SUFFIX, QueryLog, folder_bytes, read_query_log
from simsearch import cmd_serve


@pytest.fixture
def logging_app(built_index):
    """``make(**config)`` -> an app over the shared read-only index whose service logs queries as configured."""
    services: list[SearchService] = []

    def make(**changes):
        service = SearchService.from_config(ApiConfig(index=built_index, random_seed=0, **changes))
        services.append(service)
        return create_app(service=service)

    yield make
    for service in services:
        service.close()


def test_rate_one_logs_every_searched_image(logging_app, png_bytes, fmnist_folder, tmp_path):
    folder = tmp_path / "log"
    app = logging_app(query_log=str(folder), query_log_rate=1.0)
    client = app.test_client()
    answer = client.post("/api/search?k=3&label=Bag", data=png_bytes, content_type="image/png")
    assert answer.status_code == 200
    other = Path(fmnist_folder.paths[1]).read_bytes()
    batch = client.post("/api/search/batch?k=2", content_type="multipart/form-data",
                        data={"images": [(_file(png_bytes), "a.png"), (_file(other), "b.png")]})
    assert batch.status_code == 200
    logged = read_query_log(folder)
    assert len(logged) == 3
    first = logged[0]
    engine = app.extensions["simsearch"].engine
    assert (first.k, first.label, first.model_sha256) == (3, "Bag", engine.checkpoint.sha256)
    assert first.neighbor_ids == [n["id"] for n in answer.get_json()["neighbors"]]
    assert first.image_path.endswith(".png") and Path(first.image_path).read_bytes() == png_bytes
    assert first.sidecar_path == os.path.splitext(first.image_path)[0] + SIDECAR_SUFFIX
    assert sorted(Path(q.image_path).read_bytes() for q in logged[1:]) == sorted([png_bytes, other])
    assert [q.k for q in logged[1:]] == [2, 2] and logged[1].label is None
    assert len(os.listdir(folder)) == 6  # an image and a sidecar each, no temporary left


def test_rate_zero_logs_nothing(logging_app, png_bytes, tmp_path):
    client = logging_app(query_log=str(tmp_path / "log"), query_log_rate=0.0).test_client()
    for _ in range(3):
        assert client.post("/api/search", data=png_bytes, content_type="image/png").status_code == 200
    assert not (tmp_path / "log").exists()


def test_logging_stops_at_the_cap_and_resumes_with_room(png_bytes, tmp_path, caplog, monkeypatch):
    folder = tmp_path / "log"
    folder.mkdir()
    (folder / "old.bin").write_bytes(b"x" * 1000)  # already there: counted from the start
    one = len(png_bytes) + 400  # an image and its sidecar (about 250 bytes), with room to spare
    log = QueryLog(folder, rate=1.0, max_bytes=1000 + 2 * one, seed=0)
    with caplog.at_level(logging.WARNING, logger="api.querylog"):
        written = [log.maybe_log(png_bytes, k=5, label=None, neighbor_ids=[1, 2, 3], model_sha="ab" * 32)
                   for _ in range(6)]
    assert sum(path is not None for path in written) == 2 and written[2:] == [None] * 4
    assert folder_bytes(str(folder)) <= 1000 + 2 * one
    assert len([r for r in caplog.records if "cap" in r.getMessage()]) == 1  # one warning line, not one per query
    os.remove(folder / "old.bin")
    monkeypatch.setattr("api.querylog.REMEASURE_EVERY", 3)  # another worker or a person freed room: seen soon
    resumed = [log.maybe_log(png_bytes, k=5, label=None, neighbor_ids=[], model_sha="ab" * 32) for _ in range(4)]
    assert any(path is not None for path in resumed)
    assert len(read_query_log(folder)) >= 3


def test_an_unwritable_folder_never_fails_a_search(logging_app, png_bytes, tmp_path, caplog):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("I am a file")
    client = logging_app(query_log=str(not_a_folder), query_log_rate=1.0).test_client()
    with caplog.at_level(logging.DEBUG, logger="api.querylog"):
        for _ in range(3):
            assert client.post("/api/search?k=2", data=png_bytes, content_type="image/png").status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "cannot write" in r.getMessage()]
    assert len(warnings) == 1 and not_a_folder.read_text() == "I am a file"


def test_read_query_log_skips_incomplete_entries(png_bytes, tmp_path):
    log = QueryLog(tmp_path, rate=1.0, max_bytes=10**6, seed=1)
    kept = log.maybe_log(png_bytes, k=4, label="Coat", neighbor_ids=[7], model_sha="cd" * 32)
    gone = log.maybe_log(png_bytes, k=4, label=None, neighbor_ids=[], model_sha="cd" * 32)
    os.remove(next(q.image_path for q in read_query_log(tmp_path) if q.sidecar_path == gone))  # removed by hand
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "other.json").write_text(json.dumps({"image": "x.png"}))
    found = read_query_log(tmp_path)
    assert [q.sidecar_path for q in found] == [kept] and gone is not None
    assert (found[0].label, found[0].neighbor_ids, found[0].k) == ("Coat", [7], 4)
    with pytest.raises(ValueError, match="not found"):
        read_query_log(tmp_path / "absent")


@pytest.mark.parametrize("changes, message", [
    ({"query_log_rate": 1.5}, "rate"), ({"query_log_rate": -0.1}, "rate"), ({"query_log_max_bytes": 0}, "max_bytes"),
    ({"query_log": ""}, "query_log"),
])
def test_config_refuses_bad_query_log_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        ApiConfig(index="/x", **changes)


def test_serve_passes_the_query_log_flags(built_index, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("engine.engine.set_torch_threads", lambda n: None)  # keep this process's threads
    args = _serve_args(["--index", built_index, "--runtime", "torch", "--log-queries", str(tmp_path / "log"),
                        "--log-queries-rate", "0.5", "--log-queries-max-mb", "2"])
    config = cmd_serve._config(args, 1, "SIMSEARCH_TEST_NO_TOKEN")
    assert (config.query_log, config.query_log_rate, config.query_log_max_bytes) == \
        (str(tmp_path / "log"), 0.5, 2 * 2**20)
    plain = cmd_serve._config(_serve_args(["--index", built_index, "--runtime", "torch"]), 1, "SIMSEARCH_TEST_NO_TOKEN")
    assert plain.query_log is None and plain.query_log_rate == ApiConfig.query_log_rate
    assert cmd_serve._config(_serve_args(["--index", built_index, "--log-queries-rate", "0.5"]), 1, "X") is None
    assert "need --log-queries DIR" in capsys.readouterr().err
    bad = _serve_args(["--index", built_index, "--log-queries", str(tmp_path), "--log-queries-rate", "2"])
    assert cmd_serve._config(bad, 1, "X") is None
    assert "rate must be a number in [0, 1]" in capsys.readouterr().err


def _serve_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simsearch")
    cmd_serve.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def _file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)

"""The error policy over a list of server-side faults: each answer is a fixed sentence and the request id, never a
server path, SQL or an exception; the detail is in the log under that id.  (Every other error body of the suites
is scanned the same way by ``tests/errorscan.py``.)"""

from __future__ import annotations

import errno
import io
import sqlite3

import pytest

from apitest_helpers import TOKEN
from errorscan import leaks

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "/srv/simsearch/private/index/store.sqlite"


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", SECRET)


def _erofs(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system", SECRET)


def _sqlite(message: str, code: int):
    def fail(*args, **kwargs):
        exc = sqlite3.OperationalError(message)
        exc.sqlite_errorcode = code
        from index.db import _busy_or_error

        raise _busy_or_error(exc, SECRET)

    return fail


def _raw_sql_error(*args, **kwargs):  # an error no layer expected: a 500
    raise sqlite3.OperationalError(f"near 'SELECT id FROM items': syntax error in {SECRET}")


# (name, what fails, the replacement, status, message start)
FAULTS = [
    ("upload on a full disk", "upload", _enospc, 507, "the index's disk is full"),
    ("upload on a read-only disk", "upload", _erofs, 503, "writes are disabled"),
    ("commit on a full disk", "add", _sqlite("database or disk is full", sqlite3.SQLITE_FULL), 507,
     "the index's disk is full"),
    ("commit on a read-only database", "add", _sqlite("attempt to write a readonly database", 8 | (1 << 8)), 503,
     "writes are disabled"),
    ("locked database", "add", _sqlite("database is locked", sqlite3.SQLITE_BUSY), 503, "the index is busy"),
    ("damaged page", "search", _sqlite("database disk image is malformed", sqlite3.SQLITE_CORRUPT), 503,
     "the index is damaged"),
    ("unexpected SQL error", "search", _raw_sql_error, 500, "internal server error"),
]


@pytest.mark.parametrize("name, target, replacement, status, message", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_answers_leak_nothing(make_writable_app, png_bytes, monkeypatch, caplog, name, target, replacement,
                                    status, message):
    app = make_writable_app()
    engine = app.extensions["simsearch"].engine
    if target == "upload":
        monkeypatch.setattr("engine.engine.atomic_write", replacement)
    else:
        monkeypatch.setattr(engine.store, target, replacement)
    client = app.test_client()
    if target == "search":
        r = client.post("/api/search", data={"image": (io.BytesIO(png_bytes), "q.png")},
                        content_type="multipart/form-data")
    else:
        r = client.post("/api/images", data={"image": (io.BytesIO(png_bytes), "n.png"), "label": "x"},
                        content_type="multipart/form-data", headers=AUTH)
    body = r.get_json()
    assert r.status_code == status and body["error"].startswith(message), (name, body)
    assert leaks(r.get_data(as_text=True)) == [] and SECRET not in r.get_data(as_text=True)
    assert set(body) == {"error", "request_id"} and body["request_id"] == r.headers["X-Request-Id"]
    detail = "/uploads/" if target == "upload" else SECRET  # the upload's own path, or the SQLite error's
    assert detail in caplog.text and body["request_id"] in caplog.text  # the operator's detail, by request id
    assert client.get("/api/health").status_code == 200  # the server goes on


@pytest.mark.parametrize("sent, kept", [("abc-123.x:y", True), ("a" * 64, True), ("a" * 65, False),
                                        ("bad id", False), ("<script>", False), ("", False)])
def test_request_id_is_taken_from_a_sane_header_or_made(client, sent, kept):
    r = client.get("/api/nothing-here", headers={"X-Request-Id": sent})
    assert r.status_code == 404 and r.get_json()["request_id"] == r.headers["X-Request-Id"]
    assert (r.headers["X-Request-Id"] == sent) is kept and len(r.headers["X-Request-Id"]) <= 64
    assert client.get("/api/health").headers["X-Request-Id"]  # on every answer, not only errors

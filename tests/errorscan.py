"""The error-body scan: every JSON error body that a test receives (Flask's test client or ``requests`` against
a real server) is checked for what a client must never see: server paths, SQL, exception reprs, tracebacks and
the store's internal names.  Registered for the whole suite by ``tests/conftest.py``; a leak fails the test
that received it, and the run's summary gives the count of bodies scanned."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field

import pytest

# Path-like strings and internal names (case-sensitive: a message is ours, written in plain words).
LEAK_NEEDLES = ("/tmp/", "/work/", "/root/", "/home/", "/srv/", "/var/", "/usr/", ".sqlite", ".faiss",
                "Traceback", "sqlite3.", "Error(", "Error:", 'File "', "SELECT ", "INSERT ", "BEGIN ",
                "IndexStoreError", "OperationalError", "DatabaseError", "OSError", "Errno", "snapshots/",
                "store.sqlite", "uploads/")
_ROOTS = tuple(sorted({os.path.dirname(os.path.dirname(os.path.abspath(__file__))), sys.prefix}, key=len))


def leaks(text: str) -> list[str]:
    """The needles (and server roots) found in ``text``; empty when the text is clean."""
    found = [needle for needle in LEAK_NEEDLES if needle in text]
    found += [root for root in _ROOTS if len(root) > 1 and root in text]
    return found


@dataclass
class ErrorBodyScan:
    """Counts of the error bodies scanned in this run, and the leaks found (test id, status, body)."""

    scanned: int = 0
    leaked: list[tuple[str, int, str]] = field(default_factory=list)
    current: str = ""

    def check(self, status: int, content_type: str | None, body: bytes) -> None:
        if status < 400 or not (content_type or "").startswith("application/json"):
            return
        text = body.decode("utf-8", "replace")
        self.scanned += 1
        try:
            message = json.loads(text).get("error", "")
        except (ValueError, AttributeError):
            message = text
        if leaks(text) or leaks(str(message)):
            self.leaked.append((self.current, status, text[:500]))


@pytest.fixture(autouse=True)
def error_body_scan(request, monkeypatch):
    """Scan every error body this test receives; fail the test on a leak."""
    scan: ErrorBodyScan = request.config.stash[SCAN_KEY]
    scan.current = request.node.nodeid
    before = len(scan.leaked)

    from flask.testing import FlaskClient

    original_open = FlaskClient.open

    def open_and_scan(self, *args, **kwargs):
        response = original_open(self, *args, **kwargs)
        if response.status_code >= 400:
            scan.check(response.status_code, response.content_type, response.get_data())
        return response

    monkeypatch.setattr(FlaskClient, "open", open_and_scan)
    try:
        import requests.adapters
    except ImportError:  # pragma: no cover - requests is a dev requirement
        requests = None
    if requests is not None:
        original_send = requests.adapters.HTTPAdapter.send

        def send_and_scan(self, req, *args, stream=False, **kwargs):
            response = original_send(self, req, *args, stream=stream, **kwargs)
            if response.status_code >= 400 and not stream:
                scan.check(response.status_code, response.headers.get("Content-Type"), response.content)
            return response

        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send_and_scan)
    yield scan
    new = scan.leaked[before:]
    assert not new, f"error bodies leaked server detail: {new}"


SCAN_KEY = pytest.StashKey[ErrorBodyScan]()


def configure(config) -> None:
    config.stash[SCAN_KEY] = ErrorBodyScan()


def summary(terminalreporter, config) -> None:
    scan = config.stash.get(SCAN_KEY, None)
    if scan is not None and scan.scanned:
        terminalreporter.write_line(f"error-body scan: {scan.scanned} error bodies scanned, "
                                    f"{len(scan.leaked)} with a server path or an internal name")

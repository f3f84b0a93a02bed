"""The bad-input suite against a real server: every kind gets its status, the index stays unchanged."""

from __future__ import annotations

import os

from bench.reliability.badinput import bad_cases, run_bad_inputs, valid_cases, Limits
from engine.build import index_home


def test_suite_covers_the_kinds_the_issue_lists():
    kinds = {c.kind for c in bad_cases(Limits(max_batch=16, max_upload_bytes=2**20))} | {c.kind for c in valid_cases()}
    assert len(kinds) >= 25
    for needle in ("zero bytes", "truncated JPEG", "truncated PNG", "text", "HTML", "PDF", "SVG", "zip named",
                   "1x1", "1x10000", "decompression bomb", "16-bit", "palette", "LA", "CMYK", "EXIF", "progressive",
                   "animated GIF", "multi-frame TIFF", "WebP", "over the upload limit", "wrong field name",
                   "no file", "several files", "non-UTF-8", "4096-character", "k='0'", "k='-1'", "k='1000000000'",
                   "k='abc'", "JSON where multipart"):
        assert any(needle in kind for kind in kinds), needle


def test_every_bad_input_gets_its_4xx_and_changes_nothing(start_server, index_copy, token):
    # a report to attempt traversal from, and a secret beside the index that no path may reach
    home = index_home(index_copy)  # the index directory, or the home folder of a Milvus collection
    os.makedirs(os.path.join(home, "report"), exist_ok=True)
    with open(os.path.join(home, "report", "report.html"), "w") as handle:
        handle.write("<html>report</html>")
    secret = os.path.join(os.path.dirname(home), "secret.txt")
    with open(secret, "w") as handle:
        handle.write("TOP-SECRET-CONTENT")
    server = start_server(extra_args=("--max-upload-mb", "1"))

    summary = run_bad_inputs(server.url, index_copy, token, forbidden=(b"TOP-SECRET-CONTENT", b"root:x:0:0"))

    assert summary["failures"] == []
    assert summary["server_errors"] == 0
    assert summary["index_unchanged"]
    assert summary["kinds"] >= 25 and summary["requests"] > 300
    assert summary["valid_added_and_found"] == summary["valid_kinds"]
    assert server.alive()
    log = server.log()
    assert token not in log and "Traceback" not in log

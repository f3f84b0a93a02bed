"""Slow tier: the API suite and the writers test against the real Milvus 2.3.5 standalone server (the
``milvus`` PyPI package), which the inner run's fixtures start on 127.0.0.1 and stop at the end.

    .venv/bin/python -m pytest -m slow tests/reliability/test_milvus_standalone.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import REPO
from bench.milvus_servers import standalone_available

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not standalone_available(), reason="the `milvus` package (Milvus 2.3.5) is not installed")
def test_api_suite_on_milvus_2_3_5(tmp_path):
    report = tmp_path / "inner.txt"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not browser",
         "--backend", "milvus-standalone", "tests/api", "tests/reliability/test_bad_inputs.py",
         "tests/reliability/test_writers.py"],
        cwd=REPO, capture_output=True, text=True, timeout=3000,
        env={**os.environ, "PYTHONPATH": REPO})
    report.write_text(done.stdout + done.stderr)
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    assert " passed" in tail and " skipped" not in tail.split("\n")[-2], tail

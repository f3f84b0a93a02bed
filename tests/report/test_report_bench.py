"""bench/report_time.py on synthetic embeddings files, plus the slow 100k-gallery memory test."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from report_synthetic import clustered

from bench.report_time import main

ROOT = Path(__file__).resolve().parents[2]


def test_report_time_bench(tmp_path):
    for name, n, seed in (("gallery", 100, 0), ("queries", 30, 1)):
        x, y = clustered(n, 3, 8, noise=0.8, seed=seed)
        np.savez(tmp_path / f"{name}.npz", embeddings=x, labels=y, class_names=np.array(["a", "b", "c"]))
    out = tmp_path / "result.json"
    summary = main(["--gallery-npz", str(tmp_path / "gallery.npz"), "--queries-npz", str(tmp_path / "queries.npz"),
                    "--name", "synthetic", "--tsne-sample", "30", "--report-dir", str(tmp_path / "report"),
                    "--out", str(out), "--no-progress"])
    written = json.loads(out.read_text())
    assert written["name"] == "synthetic" and written["gallery"] == 100 and written["queries"] == 30
    assert written["report_s"] > 0 and "machine" in written and summary["report_s"] == written["report_s"]
    assert (tmp_path / "report" / "report.html").exists()


SLOW_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from similarity.metrics import retrieval_summary, score_queries
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 64))
    def make(n):
        y = rng.integers(0, 10, n)
        x = centres[y] + 2.0 * rng.normal(size=(n, 64))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y
    gallery, gallery_labels = make(100_000)
    query, query_labels = make(2_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scores = score_queries(query, query_labels, gallery, gallery_labels, keep=10)
    metrics, _ = retrieval_summary(scores, query_labels, gallery_labels, k=10, recall_at=(1, 10), num_classes=10)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"metrics": metrics, "growth_mib": (after - before) / 1024}))
""")


@pytest.mark.slow
def test_100k_gallery_fits_in_memory():
    """2k queries in a 100k x 64 gallery (R ~ 10k per query): peak memory growth stays bounded."""
    run = subprocess.run([sys.executable, "-c", SLOW_SCRIPT, str(ROOT)], capture_output=True, text=True,
                         timeout=900, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["growth_mib"] < 1500, result
    assert 0.1 < result["metrics"]["precision_at_1"] <= 1.0
    assert result["metrics"]["recall@1"] == pytest.approx(result["metrics"]["precision_at_1"])

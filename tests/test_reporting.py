"""`simsearch report` glue: an index plus held-out queries -> the report; queries never find themselves."""

from __future__ import annotations

import json
from report import ReportConfig
from simsearch.cli import main
from engine.reporting import report_for_index

SMALL = ReportConfig(tsne_sample=200, tsne_max_iter=250, examples=3, failures=2, silhouette_sample=300)


def test_report_for_index_with_queries_inside_the_index(built_index, fmnist_folder, tmp_path):
    # 20 images that are also in the index, listed by their indexed paths
    rows = [f"{fmnist_folder.paths[i]},{fmnist_folder.class_names[fmnist_folder.labels[i]]}" for i in range(0, 600, 30)]
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    result = report_for_index(built_index, queries=str(tmp_path / "q.csv"), out_dir=tmp_path / "rep", config=SMALL,
                              progress=False)
    data = json.loads(result.json_path.read_text())
    assert data["info"]["gallery_items"] == 580  # the 20 queries were left out of the gallery
    assert result.metrics["retrieval"]["precision_at_1"] < 1.0
    assert result.html_path.stat().st_size > 10_000


def test_report_command_leave_one_out(built_index, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--index", built_index, "--queries", "none", "--out", str(out), "--tsne-sample", "150",
                 "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["html"] == str(out / "report.html")
    assert 0.3 < summary["precision_at_1"] <= 1.0
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["queries"].startswith("leave-one-out")

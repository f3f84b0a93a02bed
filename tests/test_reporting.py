"""`simsearch report` glue: an index plus held-out queries -> the report; queries never find themselves."""

from __future__ import annotations

import json
from dataclasses import asdict

from report import ReportConfig
from simsearch.cli import main
from engine.reporting import report_for_index
from similarity.hygiene import DuplicateRule

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


def test_data_hygiene_section_finds_leaked_queries_and_relabelled_copies(index_copy, fmnist_folder, tmp_path):
    """Queries: 12 fixture images (left out of the gallery) and lossless copies of 3 gallery images in other
    formats (leaks); the gallery also gets a copy of one image under another label."""
    from pathlib import Path

    from engine.engine import Engine
    from imagecopies import reencode

    names, labels, paths = fmnist_folder.class_names, fmnist_folder.labels, fmnist_folder.paths
    copied = [100, 300, 500]
    rows = [f"{paths[i]},{names[labels[i]]}" for i in range(5, 600, 50)]
    for n, (i, fmt) in enumerate(zip(copied, ("BMP", "TIFF", "PNG"))):
        copy = tmp_path / f"copy{n}.{fmt.lower()}"
        copy.write_bytes(reencode(paths[i], fmt))
        rows.append(f"{copy},{names[labels[i]]}")
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    engine = Engine.open(index_copy)
    try:
        wrong = names[(labels[40] + 1) % len(names)]
        relabelled = engine.add_image(Path(paths[40]).read_bytes(), wrong, duplicates="keep").item.id
    finally:
        engine.close()

    result = report_for_index(index_copy, queries=str(tmp_path / "q.csv"), out_dir=tmp_path / "rep", config=SMALL,
                              progress=False)
    hygiene = result.metrics["hygiene"]
    leakage = hygiene["leakage"]
    assert leakage["queries"] == 15 and leakage["queries_with_duplicate_in_gallery"] >= 3
    assert leakage["exact"] >= 3  # the three lossless copies, found by their decoded pixels
    leaked, clean = leakage["queries_with_duplicate_in_gallery"], 15 - leakage["queries_with_duplicate_in_gallery"]
    assert leakage["knn_accuracy_leaked"] is not None
    recombined = (leakage["knn_accuracy_without_leaked"] * clean + leakage["knn_accuracy_leaked"] * leaked) / 15
    assert abs(recombined - leakage["knn_accuracy_all"]) < 1e-9
    groups = hygiene["gallery_duplicates"]
    assert groups["mixed_label_groups"] >= 1 and groups["exact_groups"] >= 1
    document = json.loads(result.json_path.read_text())
    assert document["metrics"]["hygiene"] == hygiene
    page = result.html_path.read_text()
    section = page[page.index('<section id="hygiene">'):page.index('<section id="training">')]
    assert "Duplicates with different labels" in section and "Held-out queries with a duplicate" in section
    assert section.count("<img src=\"data:image/") >= 2 * 3 + 2  # query + gallery per leak, the relabelled pair
    assert f"{relabelled} · {wrong}" in section


def test_report_without_queries_has_no_leakage_and_can_skip_duplicates(built_index, tmp_path):
    from dataclasses import replace

    result = report_for_index(built_index, queries=None, out_dir=tmp_path / "rep",
                              config=replace(SMALL, hygiene=False), progress=False)
    assert "leakage" not in result.metrics["hygiene"] and "gallery_duplicates" not in result.metrics["hygiene"]
    # the index's own rule (a class embedding: the defaults), as ingestion and index dedup use it
    assert result.metrics["hygiene"]["rule"] == asdict(DuplicateRule())

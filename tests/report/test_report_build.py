"""The whole report on tiny data: files written, PNGs decode, HTML sections present, JSON numbers right."""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from report_synthetic import clustered

from report import EmbeddingSet, ReportConfig, build_report
from similarity.metrics import retrieval_summary, score_queries

CLASSES = ["shirt", "trouser", "bag <b>", "sneaker"]
FAST = ReportConfig(tsne_sample=60, tsne_max_iter=250, examples=3, failures=2, neighbors_shown=4, k=5,
                    thumbnail_size=32, hover_thumbnails=40)
SECTIONS = ("summary", "retrieval", "per-class", "confusion", "clusters", "tsne", "examples", "training", "model")


def write_images(folder, labels, prefix) -> list[str]:
    """One 20x20 PNG per label whose grey level and bar position encode the class."""
    folder.mkdir(exist_ok=True)
    paths = []
    for i, label in enumerate(labels):
        pixels = np.full((20, 20), 50 * label, dtype=np.uint8)
        pixels[4:16, 2 + 4 * label:5 + 4 * label] = 255
        path = folder / f"{prefix}{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def sets(tmp_path):
    x, y = clustered(120, 4, 16, noise=1.0, seed=0)
    xq, yq = clustered(48, 4, 16, noise=1.0, seed=1)
    gallery = EmbeddingSet(x, y, CLASSES, write_images(tmp_path / "img", y, "g"))
    queries = EmbeddingSet(xq, yq, CLASSES, write_images(tmp_path / "img", yq, "q"), ids=np.arange(1000, 1048))
    return gallery, queries


HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "val_precision_at_1": 0.5 + 0.05 * e, "lr": 1e-3 * 0.5 ** e,
            "seconds": 3.0} for e in range(1, 5)]


def test_report_with_queries(sets, tmp_path):
    gallery, queries = sets
    result = build_report(gallery, queries, tmp_path / "out", config=FAST, progress=False,
                          info={"backbone": "smallcnn", "index": {"kind": "flat", "items": 120}}, history=HISTORY)
    assert set(result.figures) == {"tsne", "confusion", "per_class_accuracy", "examples", "training_curves"}
    for path in result.figures.values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100
            image.load()

    html = result.html_path.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "bag &lt;b&gt;" in html and "bag <b>" not in html.split("<script")[0]  # escaped class names
    assert "smallcnn" in html and "index.kind" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained: nothing fetched
    inlined = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(inlined) == len(result.figures)
    Image.open(io.BytesIO(base64.b64decode(inlined[0]))).load()
    tsne = json.loads(re.search(r'<script type="application/json" id="tsne-data">(.*?)</script>', html, re.S)[1])
    assert len(tsne["points"]) == 48 and len(tsne["thumbs"]) == 40 and tsne["classes"] == CLASSES

    document = json.loads(result.json_path.read_text())
    metrics = document["metrics"]
    assert metrics["retrieval"] == result.metrics["retrieval"]
    assert metrics["confusion_matrix"] == result.metrics["confusion_matrix"]
    assert document["info"]["index"]["items"] == 120 and len(document["history"]) == 4
    assert metrics["counts"] == {"gallery": 120, "queries": 48, "classes": 4, "dim": 16, "mode": "queries"}
    assert np.sum(metrics["confusion_matrix"]) == 48
    expected, _ = retrieval_summary(score_queries(queries.embeddings, queries.labels, gallery.embeddings,
                                                  gallery.labels, keep=FAST.neighbors_kept),
                                    queries.labels, gallery.labels, k=5, recall_at=FAST.recall_at, num_classes=4)
    assert metrics["retrieval"] == pytest.approx(expected)
    accuracy = [row["accuracy"] for row in metrics["per_class"]]
    confusion = np.array(metrics["confusion_matrix"])
    np.testing.assert_allclose(accuracy, np.diag(confusion) / confusion.sum(axis=1))
    ids = {str(i) for i in range(1000, 1048)}  # examples are named by the queries' ids
    assert len(metrics["examples"]["random"]) == 3 and set(metrics["examples"]["random"]) <= ids


def test_leave_one_out_without_images(tmp_path):
    x, y = clustered(80, 4, 8, noise=0.01, seed=2)
    result = build_report(EmbeddingSet(x, y, CLASSES), None, tmp_path, config=FAST, progress=False)
    metrics = json.loads(result.json_path.read_text())["metrics"]
    assert metrics["counts"]["mode"] == "leave_one_out"
    assert metrics["retrieval"]["precision_at_1"] == 1.0
    assert metrics["retrieval"]["mean_average_precision_at_r"] == pytest.approx(1.0)
    assert metrics["cluster"]["silhouette_cosine"] > 0.9
    assert metrics["confused_pairs"] == [] and metrics["examples"]["failures"] == []
    assert "training_curves" not in result.figures
    html = result.html_path.read_text()
    assert "No training history was given." in html and "No query was misclassified." in html
    with Image.open(result.figures["examples"]) as image:
        image.load()


def test_undecodable_images_do_not_break_the_report(tmp_path):
    x, y = clustered(40, 4, 8, noise=0.5, seed=3)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = build_report(EmbeddingSet(x, y, CLASSES, [str(bad)] * 40), None, tmp_path / "out",
                          config=replace(FAST, tsne_sample=40), progress=False)
    assert result.html_path.exists()


def test_inputs_are_checked():
    x, y = clustered(10, 2, 4, noise=0.1, seed=0)
    with pytest.raises(ValueError, match="L2-normalised"):
        EmbeddingSet(x * 2, y, ["a", "b"])
    with pytest.raises(ValueError, match="labels must lie"):
        EmbeddingSet(x, y + 5, ["a", "b"])
    with pytest.raises(ValueError, match="paths has 3"):
        EmbeddingSet(x, y, ["a", "b"], paths=["p"] * 3)
    with pytest.raises(ValueError, match="class_names"):
        build_report(EmbeddingSet(x, y, ["a", "b"]), EmbeddingSet(x, y, ["b", "a"]), "unused", progress=False)
    with pytest.raises(ValueError, match="tsne_sample"):
        ReportConfig(tsne_sample=0)


def test_the_summary_shows_training_against_its_start(tmp_path):
    """A checkpoint's start comparison is shown in the summary and kept in report.json; the start row (epoch 0,
    no loss) is no point on the training curves."""
    from similarity.gain import compare_to_start

    x, y = clustered(80, 4, 8, noise=0.5, seed=3)
    start = compare_to_start(np.array([True] * 70 + [False] * 30), np.array([True] * 90 + [False] * 10),
                             best_epoch=4).to_dict()
    history = [{"epoch": 0, "train_loss": None, "val_knn_accuracy": 0.7, "lr": 0.0, "seconds": 0.0}, *HISTORY]
    result = build_report(EmbeddingSet(x, y, CLASSES), None, tmp_path, config=FAST, progress=False,
                          history=history, start=start)
    html = result.html_path.read_text()
    assert 'id="against-start"' in html and "70.00% -&gt; 90.00% (+20.00%" in html
    assert json.loads(result.json_path.read_text())["metrics"]["against_start"]["gain"] == pytest.approx(0.2)
    assert "training_curves" in result.figures
    without = build_report(EmbeddingSet(x, y, CLASSES), None, tmp_path / "none", config=FAST, progress=False)
    assert 'id="against-start"' not in without.html_path.read_text()

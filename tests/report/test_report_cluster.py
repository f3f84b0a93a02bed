"""Cluster-quality numbers on embeddings with known structure."""

from __future__ import annotations

import math

import numpy as np
import pytest
from report_synthetic import clustered, normalise

from report.cluster import cluster_quality, seeded_sample


def test_perfect_clusters():
    x, y = clustered(300, 5, 16, noise=0.02, seed=0)
    quality = cluster_quality(x, y, seed=0)
    assert quality["silhouette_cosine"] > 0.9
    assert quality["davies_bouldin"] < 0.2
    assert quality["kmeans_nmi"] == pytest.approx(1.0)
    assert quality["kmeans_ami"] == pytest.approx(1.0)


def test_random_labels_score_near_zero():
    rng = np.random.default_rng(1)
    x, y = normalise(rng.normal(size=(600, 16))), rng.integers(0, 4, 600)
    quality = cluster_quality(x, y, seed=0)
    assert abs(quality["silhouette_cosine"]) < 0.05
    assert abs(quality["kmeans_ami"]) < 0.05


def test_samples_are_seeded_and_bounded():
    x, y = clustered(400, 4, 8, noise=0.5, seed=2)
    a = cluster_quality(x, y, seed=3, silhouette_sample=100, kmeans_sample=200)
    b = cluster_quality(x, y, seed=3, silhouette_sample=100, kmeans_sample=200)
    assert a == b
    assert a["silhouette_points"] == 100 and a["kmeans_points"] == 200
    rows = seeded_sample(10, 4, np.random.default_rng(0))
    assert len(rows) == 4 and len(set(rows)) == 4 and np.all(np.diff(rows) > 0)


def test_single_class_gives_nan_not_error():
    x, _ = clustered(20, 1, 8, noise=0.5, seed=0)
    quality = cluster_quality(x, np.zeros(20, dtype=np.int64))
    assert all(math.isnan(quality[k]) for k in ("silhouette_cosine", "davies_bouldin", "kmeans_nmi", "kmeans_ami"))

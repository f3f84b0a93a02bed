"""Cluster quality of labelled embeddings: silhouette, Davies-Bouldin, and k-means NMI / AMI.

Silhouette is O(n^2), so it and the k-means fit run on seeded samples (sizes in ``ReportConfig``).
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import (adjusted_mutual_info_score, davies_bouldin_score, normalized_mutual_info_score,
                             silhouette_score)

log = logging.getLogger(__name__)


def seeded_sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices of a uniform sample of ``min(n, size)`` out of ``n`` rows, without replacement."""
    if size >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def silhouette(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine silhouette in [-1, 1] (higher: tighter, better separated classes). embeddings: (n, d)."""
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return float("nan")
    return float(silhouette_score(embeddings, labels, metric="cosine"))


def davies_bouldin(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Davies-Bouldin index >= 0 (lower is better), Euclidean on (n, d) normalised embeddings."""
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return float("nan")
    return float(davies_bouldin_score(embeddings, labels))


def kmeans_agreement(embeddings: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """k-means with k = number of distinct labels (seeded); its NMI and AMI against ``labels``, each <= 1."""
    n_clusters = len(np.unique(labels))
    if n_clusters < 2 or n_clusters > len(labels):
        return {"kmeans_nmi": float("nan"), "kmeans_ami": float("nan")}
    clusters = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit_predict(embeddings)
    return {"kmeans_nmi": float(normalized_mutual_info_score(labels, clusters)),
            "kmeans_ami": float(adjusted_mutual_info_score(labels, clusters))}


def cluster_quality(embeddings: np.ndarray, labels: np.ndarray, *, seed: int = 0, silhouette_sample: int = 10000,
                    kmeans_sample: int = 50000) -> dict[str, float]:
    """All cluster-quality numbers for (n, d) embeddings with (n,) labels, on seeded samples."""
    rng = np.random.default_rng(seed)
    rows = seeded_sample(len(embeddings), silhouette_sample, rng)
    out = {"silhouette_cosine": silhouette(embeddings[rows], labels[rows]), "silhouette_points": float(len(rows))}
    rows = seeded_sample(len(embeddings), kmeans_sample, rng)
    out["davies_bouldin"] = davies_bouldin(embeddings[rows], labels[rows])
    out.update(kmeans_agreement(embeddings[rows], labels[rows], seed=seed))
    out["kmeans_points"] = float(len(rows))
    log.info("cluster quality: %s", out)
    return out

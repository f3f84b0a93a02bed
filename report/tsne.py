"""2-D t-SNE map of embeddings: seeded sample, PCA to ``pca_dims``, then sklearn's Barnes-Hut t-SNE."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from report.cluster import seeded_sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TsneMap:
    """rows: (m,) int64 indices of the mapped points in the input set; coords: (m, 2) float32."""

    rows: np.ndarray
    coords: np.ndarray
    perplexity: float


def tsne_map(embeddings: np.ndarray, *, sample: int = 5000, perplexity: float = 30.0, pca_dims: int = 50,
             max_iter: int = 1000, seed: int = 0) -> TsneMap:
    """t-SNE of a seeded sample of at most ``sample`` rows of (n, d) embeddings.

    Perplexity is lowered to (m - 1) / 3 for tiny samples (t-SNE needs perplexity < m).
    """
    rows = seeded_sample(len(embeddings), sample, np.random.default_rng(seed))
    points = embeddings[rows].astype(np.float32)
    m = len(points)
    if m < 4:
        log.warning("t-SNE needs at least 4 points, got %d; placing them on a line", m)
        coords = np.stack([np.arange(m, dtype=np.float32), np.zeros(m, dtype=np.float32)], axis=1)
        return TsneMap(rows, coords, 0.0)
    dims = min(pca_dims, m, points.shape[1])
    if dims < points.shape[1]:
        points = PCA(n_components=dims, random_state=seed).fit_transform(points).astype(np.float32)
    used = min(float(perplexity), (m - 1) / 3.0)
    if used < perplexity:
        log.info("t-SNE perplexity lowered from %s to %.2f for %d points", perplexity, used, m)
    coords = TSNE(n_components=2, perplexity=used, max_iter=max_iter, init="pca", learning_rate="auto",
                  random_state=seed).fit_transform(points)
    return TsneMap(rows, coords.astype(np.float32), used)

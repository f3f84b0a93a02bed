"""Seeded synthetic embeddings for the report tests (a plain module, imported by the tests)."""

from __future__ import annotations

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, num_classes: int, dim: int, noise: float, seed: int,
              centres_seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
    """n points around num_classes fixed random centres: (n, dim) float32 normalised, (n,) int64 labels."""
    centres = np.random.default_rng(centres_seed).normal(size=(num_classes, dim))
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    return normalise(centres[labels] + noise * rng.normal(size=(n, dim))), labels.astype(np.int64)

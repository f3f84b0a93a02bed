"""Shared fixtures for tests/index: seeded synthetic data and tmp_path stores."""

from __future__ import annotations

import numpy as np
import pytest

from index import IndexConfig, IndexStore

DIM = 32


def model_info(dim: int = DIM, **overrides) -> dict:
    info = {"checkpoint_sha256": "a" * 64, "embedding_dim": dim, "metric": "cosine",
            "preprocess": {"resize": 224, "mean": [0.5, 0.5, 0.5]}, "name": "test-net"}
    info.update(overrides)
    return info


def vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    """``(n, dim) float32`` clustered, normalised vectors (32 centres)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((32, dim)).astype(np.float32)
    x = centres[rng.integers(0, 32, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def add_items(store: IndexStore, xb: np.ndarray, prefix: str = "img") -> np.ndarray:
    n = len(xb)
    return store.add(xb, labels=[f"class{i % 5}" for i in range(n)], paths=[f"{prefix}/{i}.png" for i in range(n)])


CONFIGS = {
    "flat": IndexConfig(index_type="flat"),
    "hnsw": IndexConfig(index_type="hnsw", hnsw_m=16, ef_construction=40, ef_search=64),
    "ivfpq": IndexConfig(index_type="ivfpq", ivf_nlist=16, pq_m=8, nprobe=16),
}


@pytest.fixture(params=sorted(CONFIGS))
def index_type(request) -> str:
    return request.param


@pytest.fixture
def store(tmp_path, index_type) -> IndexStore:
    return IndexStore.create(tmp_path / "idx", DIM, config=CONFIGS[index_type], model_info=model_info())

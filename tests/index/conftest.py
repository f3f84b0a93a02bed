"""Shared fixtures for tests/index: seeded synthetic data, tmp_path stores and child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from index import IndexConfig, IndexStore

DIM = 32
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def ids_of(results) -> list[list[int]]:
    return [[n.id for n in hits] for hits in results]


def live_ids(store: IndexStore) -> set[int]:
    return {m.id for m in store.iter_items()}


def exact_ids(store: IndexStore, xq: np.ndarray, k: int) -> list[list[int]]:
    """The true ``k`` nearest live ids of each query, by brute force over the stored vectors."""
    ids, xb = store.all_vectors()
    order = np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :k]
    return ids[order].tolist()


CONFIGS = {
    "flat": IndexConfig(index_type="flat"),
    "hnsw": IndexConfig(index_type="hnsw", hnsw_m=16, ef_construction=40, ef_search=64),
    "ivfpq": IndexConfig(index_type="ivfpq", ivf_nlist=16, pq_m=8, nprobe=16),
}


def measured(monkeypatch, *rows: tuple[str, dict, int, float]) -> None:
    """Make the recall table (``index.recall_table``) hold ``(index_type, params, n, recall@10)`` rows."""
    from index import recall_table

    table = tuple({"data": "test", "n": n, "index_type": t, "params": params, "recall_at_10": recall,
                   "p50_ms": 0.1 if t == "hnsw" else 0.2, "bytes_per_vector": None} for t, params, n, recall in rows)
    monkeypatch.setattr(recall_table, "load", lambda path=recall_table.TABLE_FILE: table)


def manual(index_type: str, **changes) -> IndexConfig:
    """``CONFIGS[index_type]`` without automatic background snapshots (for tests that count them)."""
    return replace(CONFIGS[index_type], auto_snapshot=False, **changes)


@pytest.fixture(params=sorted(CONFIGS))
def index_type(request) -> str:
    return request.param


@pytest.fixture
def store(tmp_path, index_type) -> Iterator[IndexStore]:
    store = IndexStore.create(tmp_path / "idx", DIM, config=CONFIGS[index_type], model_info=model_info())
    yield store
    store.close()  # waits for its background snapshot, so none outlives the test


class Child:
    """``python -c script *args`` with the repository importable; its complete stdout lines are collected
    by a thread as they arrive (a line cut off by a kill is not one)."""

    def __init__(self, script: str, *args: object) -> None:
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._stderr = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would block the child
        self.process = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                                        stderr=self._stderr, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.endswith("\n"):
                self.lines.append(line.rstrip("\n"))

    def wait_for_lines(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n:
            if self.process.poll() is not None:
                self._reader.join(5)
                if len(self.lines) >= n:
                    return
                raise AssertionError(f"child exited with {self.process.returncode}: {self._errors()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"child printed {len(self.lines)} lines in {timeout} s, expected {n}")
            time.sleep(0.01)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.finish(expect_rc=-signal.SIGKILL)

    def finish(self, expect_rc: int | None = 0, timeout: float = 120.0) -> None:
        self.process.wait(timeout)
        self._reader.join(5)
        errors = self._errors()
        self.process.stdout.close()
        self._stderr.close()
        if expect_rc is not None:
            assert self.process.returncode == expect_rc, errors

    def _errors(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]

"""Batch samplers: Siamese pairs and class-balanced batches.

All samplers yield lists of dataset indices (use them as a DataLoader ``batch_sampler``) and draw
their randomness from a ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class PairSampler:
    """Batches of ``pairs_per_batch`` (a, b) pairs for a Siamese network.

    Each batch is ``[a_0, ..., a_{P-1}, b_0, ..., b_{P-1}]``: pair i is (batch[i], batch[P + i]).
    Exactly ``round(P * positive_fraction)`` pairs per batch are positive (same class, a != b); the
    rest are negative (different classes). One epoch covers about ``len(labels)`` images.
    """

    def __init__(self, labels: np.ndarray, pairs_per_batch: int, positive_fraction: float = 0.5,
                 rng: np.random.Generator | None = None, batches_per_epoch: int | None = None):
        labels = np.asarray(labels)
        if pairs_per_batch < 1:
            raise ValueError(f"pairs_per_batch must be >= 1, got {pairs_per_batch}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        classes, counts = np.unique(labels, return_counts=True)
        if len(classes) < 2:
            raise ValueError("pair sampling needs at least 2 classes")
        if (counts < 2).any():
            raise ValueError(f"classes with fewer than 2 images cannot form positive pairs: {classes[counts < 2]}")
        self.labels = labels
        self.pairs_per_batch = pairs_per_batch
        self.num_positive = int(round(pairs_per_batch * positive_fraction))
        self.rng = rng or np.random.default_rng(0)
        self.by_class = {int(c): np.flatnonzero(labels == c) for c in classes}
        self.not_class = {int(c): np.flatnonzero(labels != c) for c in classes}
        self.batches_per_epoch = batches_per_epoch or max(1, len(labels) // (2 * pairs_per_batch))

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _partner(self, anchor: int, positive: bool) -> int:
        label = int(self.labels[anchor])
        if positive:
            pool = self.by_class[label]
            choice = pool[self.rng.integers(len(pool) - 1)]
            # skip the anchor itself: draw from the pool without it by shifting past its position
            if choice == anchor:
                choice = pool[-1]
            return int(choice)
        pool = self.not_class[label]
        return int(pool[self.rng.integers(len(pool))])

    def sample_batch(self) -> list[int]:
        anchors = self.rng.integers(len(self.labels), size=self.pairs_per_batch)
        positive = np.zeros(self.pairs_per_batch, dtype=bool)
        positive[self.rng.permutation(self.pairs_per_batch)[: self.num_positive]] = True
        partners = [self._partner(int(a), bool(p)) for a, p in zip(anchors, positive)]
        return [int(a) for a in anchors] + partners

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.batches_per_epoch):
            yield self.sample_batch()


class ClassBalancedSampler:
    """Batches of ``classes_per_batch`` classes x ``m_per_class`` images (with replacement only when
    a class has fewer than m images), so every batch has positives for in-batch mining."""

    def __init__(self, labels: np.ndarray, m_per_class: int, batch_size: int,
                 rng: np.random.Generator | None = None, batches_per_epoch: int | None = None):
        labels = np.asarray(labels)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError("class-balanced sampling needs at least 2 classes")
        # enough images per class to fill the batch with the classes we have
        self.m = max(m_per_class, batch_size // len(classes))
        self.classes_per_batch = max(2, min(len(classes), batch_size // self.m))
        self.labels = labels
        self.rng = rng or np.random.default_rng(0)
        self.by_class = [np.flatnonzero(labels == c) for c in classes]
        self.batch_size = self.m * self.classes_per_batch
        self.batches_per_epoch = batches_per_epoch or max(1, len(labels) // self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def sample_batch(self) -> list[int]:
        chosen = self.rng.choice(len(self.by_class), size=self.classes_per_batch, replace=False)
        batch: list[int] = []
        for c in chosen:
            pool = self.by_class[c]
            picks = self.rng.choice(pool, size=self.m, replace=len(pool) < self.m)
            batch.extend(int(i) for i in picks)
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.batches_per_epoch):
            yield self.sample_batch()


class ShuffledBatches:
    """Plain shuffled batches over the whole set (the last incomplete batch is dropped)."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator | None = None):
        self.n, self.batch_size = n, batch_size
        self.rng = rng or np.random.default_rng(0)

    def __len__(self) -> int:
        return max(1, self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.rng.permutation(self.n)
        for i in range(len(self)):
            yield [int(j) for j in order[i * self.batch_size:(i + 1) * self.batch_size]]

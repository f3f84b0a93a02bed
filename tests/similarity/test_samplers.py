"""Pair sampling (the Siamese core) and class-balanced batches."""

from __future__ import annotations

import numpy as np
import pytest

from similarity.samplers import ClassBalancedSampler, PairSampler, ShuffledBatches

LABELS = np.repeat(np.arange(5), [2, 7, 30, 11, 50])


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8])
def test_pair_sampler_ratio_labels_and_no_self_pairs(fraction):
    sampler = PairSampler(LABELS, pairs_per_batch=40, positive_fraction=fraction, rng=np.random.default_rng(1))
    batches = list(sampler)
    assert len(batches) == len(sampler) == max(1, len(LABELS) // 80)
    for batch in batches:
        a, b = np.array(batch[:40]), np.array(batch[40:])
        same = LABELS[a] == LABELS[b]
        assert same.sum() == round(40 * fraction)
        assert not (a == b).any(), "a pair of an image with itself"
    many = np.concatenate([PairSampler(LABELS, 40, fraction, np.random.default_rng(2)).sample_batch()
                           for _ in range(50)])
    assert set(many.tolist()) <= set(range(len(LABELS)))


def test_pair_sampler_draws_positives_uniformly_from_small_class():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    sampler = PairSampler(labels, pairs_per_batch=1, positive_fraction=1.0, rng=np.random.default_rng(0))
    partners = {0: set(), 1: set(), 2: set()}
    for _ in range(400):
        a, b = sampler.sample_batch()
        if a in partners:
            partners[a].add(b)
    assert partners == {0: {1, 2}, 1: {0, 2}, 2: {0, 1}}


def test_pair_sampler_is_reproducible_and_validates():
    one = PairSampler(LABELS, 16, 0.5, np.random.default_rng(7)).sample_batch()
    two = PairSampler(LABELS, 16, 0.5, np.random.default_rng(7)).sample_batch()
    assert one == two
    with pytest.raises(ValueError, match="fewer than 2"):
        PairSampler(np.array([0, 1, 1]), 4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        PairSampler(np.array([0, 0, 0]), 4)


def test_class_balanced_batches_have_m_per_class():
    sampler = ClassBalancedSampler(LABELS, m_per_class=4, batch_size=20, rng=np.random.default_rng(0))
    for batch in sampler:
        counts = np.bincount(LABELS[batch], minlength=5)
        assert len(batch) == 20
        assert sorted(c for c in counts if c) == [4] * 5


def test_shuffled_batches_cover_each_index_once():
    seen = np.concatenate(list(ShuffledBatches(100, 10, np.random.default_rng(0))))
    assert sorted(seen.tolist()) == list(range(100))

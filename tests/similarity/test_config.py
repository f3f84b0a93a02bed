"""Config rules that entry points rely on instead of repeating them."""

from __future__ import annotations

import pytest

from similarity.config import LOSSES, SAMPLERS, default_sampler


def test_each_loss_names_the_sampler_it_needs():
    assert {loss: default_sampler(loss) for loss in LOSSES} == {
        "contrastive": "pairs", "triplet": "m_per_class", "multisimilarity": "m_per_class", "normsoftmax": None}
    assert all(default_sampler(loss) in (*SAMPLERS, None) for loss in LOSSES)
    with pytest.raises(ValueError, match="unknown loss 'arcface'"):
        default_sampler("arcface")

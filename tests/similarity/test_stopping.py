"""The best epoch and early stopping that the class and copy trainers share."""

from __future__ import annotations

from similarity.stopping import BestEpoch, annealing


def test_stale_epochs_count_only_once_annealed():
    best = BestEpoch(patience=2)
    assert best.update(0, 0.5, annealed=False) and best.epoch == 0
    assert not best.update(1, 0.4, annealed=False) and best.stale == 0 and best.stop_reason is None
    assert best.update(2, 0.6, annealed=True) and best.epoch == 2
    assert not best.update(3, 0.6, annealed=True) and best.stop_reason is None
    assert not best.update(4, 0.1, annealed=True)
    assert best.stop_reason == "early stop: no val improvement for 2 epochs"
    assert BestEpoch(patience=0, stale=9).stop_reason is None


def test_annealing_is_the_last_quarter_of_the_epochs():
    assert not annealing(None, 7, 10) and annealing(None, 8, 10)

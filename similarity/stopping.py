"""The best epoch and early stopping, shared by every training loop (classes and copies).

:class:`BestEpoch` keeps the best validation score and counts the epochs without improvement, but only while the
LR schedule is in its annealed last quarter (:func:`annealing`): a plateau at a high learning rate is not
convergence, and the cosine's tail usually brings the best epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from similarity.budget import TimeBudget

ANNEALING_FROM = 0.75  # early stopping counts stale epochs only past this share of the schedule (LR < 15% of peak)


def annealing(budget: TimeBudget | None, epoch: int, epochs: int) -> bool:
    """Whether the LR schedule is in its last quarter, where early stopping counts epochs without improvement:
    by the budget's steps when there is one, else by ``epoch`` of ``epochs``.

    A plateau at a high learning rate is not convergence: the cosine's annealed tail usually brings the best
    epochs, so stopping there would keep an unannealed model and leave the budget unused."""
    if budget is not None:
        return budget.done >= ANNEALING_FROM * budget.total_steps
    return epoch >= ANNEALING_FROM * epochs


@dataclass
class BestEpoch:
    """The best validation ``score`` so far, its ``epoch``, and the stale epochs since (``patience`` 0: never
    stop early)."""

    patience: int
    score: float = -1.0
    epoch: int = 0
    stale: int = 0

    def update(self, epoch: int, score: float, *, annealed: bool) -> bool:
        """Record ``epoch``'s ``score``; True when it is the new best. A worse epoch counts as stale only when
        ``annealed`` (see :func:`annealing`)."""
        if score > self.score:
            self.score, self.epoch, self.stale = score, epoch, 0
            return True
        if annealed:
            self.stale += 1
        return False

    @property
    def stop_reason(self) -> str | None:
        """Why training stops early now, or None to go on."""
        if self.patience and self.stale >= self.patience:
            return f"early stop: no val improvement for {self.stale} epochs"
        return None


def close_epoch(row: dict, best: BestEpoch, budget: TimeBudget | None,
                on_epoch: Callable[[dict], None] | None) -> str | None:
    """An epoch's end, after its validation and saving: ``on_epoch`` gets the history ``row`` (it may raise to
    abort), the budget closes the epoch and re-plans; returns why training stops early now (None: go on)."""
    if on_epoch is not None:
        on_epoch(row)
    if budget is not None:
        budget.epoch_done()
    return best.stop_reason


def stop_reason(early: str | None, budget: TimeBudget | None) -> str:
    """Why a run ended: early stopping's reason, else the budget's plan, else all epochs done."""
    return early or (budget.stop_reason() if budget is not None else "finished all epochs")


__all__ = ["ANNEALING_FROM", "BestEpoch", "annealing", "close_epoch", "stop_reason"]

"""A wall-time budget that shapes the schedule: how many training steps fit, measured, not guessed.

:class:`TimeBudget` times the training steps (after ``ignore_steps`` that pay for torch.compile and the first
batches), times the end-of-epoch work (validation, checkpoint), and plans the most whole epochs, up to
``max_epochs``, whose cost still fits in the budget after a reserve for the final evaluation. The trainer
re-fits its LR schedule (:func:`similarity.schedule.refit`) to every new plan, so the run always ends annealed.

Plans are made after the measuring steps (or half-way through a short first epoch), at each epoch's end (the
plan may grow or shrink) and every tenth of an epoch (it may only shrink: a slower machine ends its last epoch
early rather than overrunning). When even the current epoch cannot be finished, it is cut to the steps that fit
and the LR anneals over those.

A step costs the *median* of its epoch's step times; what an epoch's steps cost beyond that (the first batches
of a DataLoader starting its workers, a pause) is a per-epoch cost, measured on the last whole epoch and charged
once per epoch. A mean over the first tenth of an epoch would charge the start-up to every step: the plan would
shrink every tenth of an epoch and grow back at each epoch end, and the run would end with budget unused.

The clock is injectable (``clock``: seconds as a float), so tests run the planner on a fake clock.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")

# embedding one image costs about this share of one image's training step (forward only, no optimiser),
# until the first validation pass measures it
EVAL_COST_RATIO = 0.5
MIN_STEPS_FOR_MEDIAN = 3  # an epoch's own step times count once it has this many (a median of 3 drops one slow start)
SAFETY_SHARE = 0.03  # of the budget, kept free for what the reserve estimate misses (saving, plotting)


@dataclass(frozen=True)
class BudgetPlan:
    """One plan: at ``at_step`` (after ``elapsed`` seconds) the run was fitted to ``total_steps``."""

    at_step: int
    elapsed: float
    total_steps: int
    epochs: int  # epochs the run will have when it ends (the last one may be cut short)
    step_seconds: float
    epoch_overhead_seconds: float
    reserve_seconds: float

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def fit_steps(available: float, *, done: int, epoch_start: int, epochs_done: int, steps_per_epoch: int,
              max_epochs: int, step_seconds: float, epoch_overhead: float) -> int:
    """The total step count to plan for: the most whole epochs, up to ``max_epochs``, whose remaining cost
    ``(total - done) * step_seconds + (epochs left) * epoch_overhead`` fits ``available`` seconds; else the
    current epoch (which started at step ``epoch_start``) cut to the steps that fit, at least one."""
    for epochs_left in range(max_epochs - epochs_done, 0, -1):
        total = epoch_start + epochs_left * steps_per_epoch
        if (total - done) * step_seconds + epochs_left * epoch_overhead <= available:
            return total
    fitting = int((available - epoch_overhead) // step_seconds) if step_seconds > 0 else 0
    return done + max(1, min(epoch_start + steps_per_epoch - done, fitting))


class TimeBudget:
    """Fits a training run into ``seconds`` of wall time, counted from ``started`` (default: construction).

    The trainer wraps each epoch's batches in :meth:`steps` (which times them and stops at the planned
    total), calls :meth:`epoch_done` after each epoch's validation and saving, and gets every new total
    through ``on_replan(total_steps)``. ``eval_images_per_epoch`` (validation) and ``final_eval_images``
    (the final evaluation after the last epoch) size the time kept for evaluating.
    """

    def __init__(self, seconds: float, *, steps_per_epoch: int, max_epochs: int, batch_size: int,
                 eval_images_per_epoch: int = 0, final_eval_images: int = 0, clock: Clock = time.perf_counter,
                 ignore_steps: int = 2, measure_steps: int = 10, started: float | None = None,
                 on_replan: Callable[[int], None] | None = None) -> None:
        if seconds <= 0:
            raise ValueError(f"a time budget must be > 0 seconds, got {seconds}")
        if steps_per_epoch < 1 or max_epochs < 1 or batch_size < 1:
            raise ValueError(f"steps_per_epoch ({steps_per_epoch}), max_epochs ({max_epochs}) and batch_size "
                             f"({batch_size}) must be >= 1")
        self.seconds = float(seconds)
        self.steps_per_epoch, self.max_epochs, self.batch_size = steps_per_epoch, max_epochs, batch_size
        self.eval_images_per_epoch, self.final_eval_images = eval_images_per_epoch, final_eval_images
        self.clock, self.ignore_steps, self.measure_steps = clock, ignore_steps, measure_steps
        self.on_replan = on_replan
        self.started = clock() if started is None else started
        self.total_steps = steps_per_epoch * max_epochs
        self.done = 0  # optimiser steps taken
        self.epochs_done = 0
        self.epoch_start = 0  # the step the current epoch started at
        self.plans: list[BudgetPlan] = []
        self._seen = 0  # steps timed, ignored ones included
        self._this_epoch: list[float] = []
        self._last_epoch: list[float] = []
        self._ignored: list[float] = []
        self._overhead: float | None = None
        self._epoch_excess = 0.0  # the last whole epoch's step time beyond (steps x median step)
        self._eval_seconds_per_image: float | None = None
        self._last_step_end: float | None = None
        self._check_every = max(1, steps_per_epoch // 10)
        # the first plan comes after the measuring steps, or half-way through a short first epoch (with one step
        # measured at least), so that even the first epoch can end annealed
        self._first_plan_at = min(ignore_steps + measure_steps, max(ignore_steps + 1, steps_per_epoch // 2))

    # ------------------------------------------------------------------ what the trainer calls

    @property
    def finished(self) -> bool:
        return self.done >= self.total_steps

    @property
    def planned_epochs(self) -> int:
        return self._epochs_for(self.total_steps)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def steps(self, batches: Iterable[T]) -> Iterator[T]:
        """Yield one epoch's batches until they or the planned total run out, timing each step (the time
        from one batch being handed out to the next being asked for, data loading included)."""
        iterator = iter(batches)
        last = self.clock()
        while self.done < self.total_steps:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            yield batch
            now = self.clock()
            self._record(now - last)
            last = self._last_step_end = now
            self.done += 1
            if not self.plans and self._seen >= self._first_plan_at:
                self._replan(allow_growth=True)
            elif self.plans and (self.done - self.epoch_start) % self._check_every == 0:
                self._replan(allow_growth=False)

    def epoch_done(self) -> None:
        """Call after the epoch's validation and saving: their time is this epoch's overhead."""
        if self._last_step_end is not None:
            self._overhead = max(0.0, self.clock() - self._last_step_end)
            if self.eval_images_per_epoch:
                self._eval_seconds_per_image = self._overhead / self.eval_images_per_epoch
        if len(self._this_epoch) >= MIN_STEPS_FOR_MEDIAN:
            median = statistics.median(self._this_epoch)
            self._epoch_excess = max(0.0, sum(self._this_epoch) - median * len(self._this_epoch))
        self.epochs_done += 1
        self.epoch_start = self.done
        self._last_epoch, self._this_epoch = (self._this_epoch or self._last_epoch), []
        if not self.finished:  # a finished run stays finished: its LR has annealed
            self._replan(allow_growth=True)

    def stop_reason(self) -> str:
        """Why the run ends when it ends on its plan."""
        if self.total_steps == self.steps_per_epoch * self.max_epochs:
            return "finished all epochs"
        return (f"time budget: {self.planned_epochs} of {self.max_epochs} epochs fit the {self.seconds / 60:g}-minute "
                "budget (LR annealed)")

    def summary(self) -> dict:
        """What the checkpoint records: the budget, the plans, the time used."""
        return {"budget_seconds": round(self.seconds, 2), "elapsed_seconds": round(self.elapsed, 2),
                "planned_epochs": self.planned_epochs, "total_steps": self.total_steps,
                "plans": [plan.to_dict() for plan in self.plans]}

    # ------------------------------------------------------------------ estimates and planning

    def _epochs_for(self, total_steps: int) -> int:
        return self.epochs_done + math.ceil(max(0, total_steps - self.epoch_start) / self.steps_per_epoch)

    def _record(self, seconds: float) -> None:
        self._seen += 1
        (self._ignored if self._seen <= self.ignore_steps else self._this_epoch).append(seconds)

    def _step_seconds(self) -> float:
        """Seconds per step: this epoch's median once it has a few steps (a machine that slows down is seen
        within the epoch), else the last epoch's, else whatever has been timed."""
        for times in (self._this_epoch if len(self._this_epoch) >= MIN_STEPS_FOR_MEDIAN else [], self._last_epoch,
                      self._this_epoch, self._ignored):
            if times:
                return statistics.median(times)
        return 0.0

    def _eval_seconds(self, images: int, step_seconds: float) -> float:
        per_image = self._eval_seconds_per_image
        if per_image is None:
            per_image = EVAL_COST_RATIO * step_seconds / self.batch_size
        return images * per_image

    def _replan(self, *, allow_growth: bool) -> None:
        step_seconds = self._step_seconds()
        overhead = self._epoch_excess + (self._overhead if self._overhead is not None else self._eval_seconds(
            self.eval_images_per_epoch, step_seconds))
        reserve = self._eval_seconds(self.final_eval_images, step_seconds) + SAFETY_SHARE * self.seconds
        elapsed = self.elapsed
        # every epoch left is charged its start-up, but a started epoch has paid its own already
        paid = self._epoch_excess if self.done > self.epoch_start else 0.0
        total = fit_steps(self.seconds - elapsed - reserve + paid, done=self.done, epoch_start=self.epoch_start,
                          epochs_done=self.epochs_done, steps_per_epoch=self.steps_per_epoch,
                          max_epochs=self.max_epochs, step_seconds=step_seconds, epoch_overhead=overhead)
        if total == self.total_steps or (total > self.total_steps and not allow_growth):
            if not self.plans:
                self._remember(total, elapsed, step_seconds, overhead, reserve)
            return
        self.total_steps = total
        plan = self._remember(total, elapsed, step_seconds, overhead, reserve)
        log.info("time budget: %d epoch(s), %d steps (%.3fs/step, %.1fs per epoch end, %.1fs reserved) after "
                 "%.1fs of %.1fs", plan.epochs, total, step_seconds, overhead, reserve, elapsed, self.seconds)
        if self.on_replan is not None:
            self.on_replan(total)

    def _remember(self, total: int, elapsed: float, step_seconds: float, overhead: float,
                  reserve: float) -> BudgetPlan:
        plan = BudgetPlan(self.done, elapsed, total, self._epochs_for(total), step_seconds, overhead, reserve)
        self.plans.append(plan)
        return plan

"""A wall-time budget that shapes the schedule: how many training steps fit, measured, not guessed.

:class:`TimeBudget` times the training steps (after ``ignore_steps`` that pay for torch.compile and the first
batches), times the end-of-epoch work (validation, checkpoint), and plans the most whole epochs, up to
``max_epochs``, whose cost still fits in the budget after a reserve for the final evaluation. The trainer
re-fits its LR schedule (:func:`similarity.schedule.refit`) to every new plan, so the run always ends annealed.

Plans are made after the measuring steps (or half-way through a short first epoch), at each epoch's end and
every tenth of an epoch. At an epoch's end the plan may grow or shrink. Within an epoch it may grow only while
the run is early in its schedule (fewer than ``GROWTH_UNTIL`` of the planned steps done, the LR still high), so
a slow start (a warm-up longer than ``ignore_steps``, a CPU shared with another job for the first minutes)
costs the epochs it took, not the rest of the budget: even a first plan of one epoch, or of part of one, grows
inside that epoch once the machine speeds up. Later in the run an in-epoch check may only shrink the plan (a
slower machine ends its last epoch early rather than overrunning): growing there would stretch an almost
annealed cosine again. When even the current epoch cannot be finished, it is cut to the steps that fit and the
LR anneals over those. Inside an epoch a plan grows only by a margin (``GROWTH_MARGIN_SHARE`` of the plan or
half an epoch, whichever is more) and only if it still fits with steps ``GROWTH_HEADROOM`` dearer, so step-time
noise does not flip it at every check.

A step costs the *median* of the last steps (those since the previous check, at least three; the window runs
across epoch ends): the steady-state speed, whatever the first minutes cost. What an epoch's steps cost beyond
that (the first batches of a DataLoader starting its workers) is a per-epoch cost, charged once per epoch: the
smaller of the last two epochs' (the current one counting, from its first check, what it has cost so far). A
one-off (the tail of a slow start, a pause) is so charged to no epoch left, and a cost every epoch pays is
charged once two epochs have shown it. A mean over the first tenth of an epoch would charge the start-up to
every step: the plan would shrink every tenth of an epoch and grow back at each epoch end, and the run would
end with budget unused.

The clock is injectable (``clock``: seconds as a float), so tests run the planner on a fake clock.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")

# embedding one image costs about this share of one image's training step (forward only, no optimiser),
# until the first validation pass measures it
EVAL_COST_RATIO = 0.5
# a step costs the median of the steps since the previous check (a tenth of an epoch), at least this many (a
# median of 3 drops one slow batch); an epoch's excess is measured once it has this many steps. Each check so
# judges the speed since the one before: a slow start is forgotten one check after the machine speeds up, and a
# slow-down is seen as soon. A longer window would see both later, and a slow-down seen late overruns the budget.
MIN_STEPS_FOR_MEDIAN = 3
SAFETY_SHARE = 0.03  # of the budget, kept free for what the reserve estimate misses (saving, plotting)
# in-epoch checks may grow the plan until this share of its steps is done: the cosine is still near its top,
# and the re-fit resumes its phase, so the LR barely bends. Growing later would stretch an almost annealed
# cosine out again (a long tail at a low LR). An epoch's end may grow the plan at any point of the run.
GROWTH_UNTIL = 0.5
# inside an epoch a plan grows by at least this share of its steps or half an epoch, whichever is more (a run of
# many short epochs is not re-fitted for one more of them) ...
GROWTH_MARGIN_SHARE = 0.05
# ... and only if the larger plan fits with every step this much dearer: a plan that only just fits is left to
# the epoch's end, so noise in the median of a few step times cannot shrink a plan and grow it back at every check
GROWTH_HEADROOM = 0.02


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
        self._check_every = max(1, steps_per_epoch // 10)
        self._recent: deque[float] = deque(maxlen=max(MIN_STEPS_FOR_MEDIAN, self._check_every))
        self._this_epoch: list[float] = []
        self._ignored: list[float] = []
        self._epoch_excesses: deque[float] = deque(maxlen=2)  # the last whole epochs' excess over the step cost
        self._overhead: float | None = None
        self._eval_seconds_per_image: float | None = None
        self._last_step_end: float | None = None
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
                self._replan(allow_growth=self.done < GROWTH_UNTIL * self.total_steps, within_epoch=True)

    def epoch_done(self) -> None:
        """Call after the epoch's validation and saving: their time is this epoch's overhead."""
        if self._last_step_end is not None:
            self._overhead = max(0.0, self.clock() - self._last_step_end)
            if self.eval_images_per_epoch:
                self._eval_seconds_per_image = self._overhead / self.eval_images_per_epoch
        if len(self._this_epoch) >= MIN_STEPS_FOR_MEDIAN:
            self._epoch_excesses.append(self._excess(self._this_epoch, self._step_seconds()))
        self.epochs_done += 1
        self.epoch_start = self.done
        self._this_epoch = []
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
        if self._seen <= self.ignore_steps:
            self._ignored.append(seconds)
        else:
            self._this_epoch.append(seconds)
            self._recent.append(seconds)

    def _step_seconds(self) -> float:
        """Seconds per step: the median of the recent steps (the steady-state speed), else of the ignored ones."""
        for times in (self._recent, self._ignored):
            if times:
                return statistics.median(times)
        return 0.0

    @staticmethod
    def _excess(times: list[float], step_seconds: float) -> float:
        return max(0.0, sum(times) - step_seconds * len(times))

    def _epoch_excess(self, step_seconds: float) -> float:
        """Seconds an epoch costs beyond its steps at ``step_seconds``: the smaller of the last two epochs', the
        current one counting what it has cost so far. Nothing until two have been seen: the first epoch's extra
        time may be the run's own start (a long warm-up, a CPU shared for the first minutes), paid once."""
        seen = list(self._epoch_excesses)
        if self.done > self.epoch_start and self._this_epoch:
            seen = seen[-1:] + [self._excess(self._this_epoch, step_seconds)]
        return min(seen) if len(seen) >= 2 else 0.0

    def _eval_seconds(self, images: int, step_seconds: float) -> float:
        per_image = self._eval_seconds_per_image
        if per_image is None:
            per_image = EVAL_COST_RATIO * step_seconds / self.batch_size
        return images * per_image

    def _replan(self, *, allow_growth: bool, within_epoch: bool = False) -> None:
        step_seconds = self._step_seconds()
        excess = self._epoch_excess(step_seconds)
        overhead = excess + (self._overhead if self._overhead is not None else self._eval_seconds(
            self.eval_images_per_epoch, step_seconds))
        reserve = self._eval_seconds(self.final_eval_images, step_seconds) + SAFETY_SHARE * self.seconds
        elapsed = self.elapsed
        # every epoch left is charged its start-up, but a started epoch has paid its own already
        paid = excess if self.done > self.epoch_start else 0.0

        def fit(seconds_per_step: float) -> int:
            return fit_steps(self.seconds - elapsed - reserve + paid, done=self.done, epoch_start=self.epoch_start,
                             epochs_done=self.epochs_done, steps_per_epoch=self.steps_per_epoch,
                             max_epochs=self.max_epochs, step_seconds=seconds_per_step, epoch_overhead=overhead)

        total = fit(step_seconds)
        if total > self.total_steps and within_epoch:
            margin = max(self.steps_per_epoch // 2, math.ceil(GROWTH_MARGIN_SHARE * self.total_steps))
            grown = fit(step_seconds * (1.0 + GROWTH_HEADROOM))
            total = grown if grown >= self.total_steps + margin else self.total_steps
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

"""The learning-rate schedule: linear warm-up, then cosine decay to a floor at the last step, re-fittable.

:class:`WarmupCosine` is the per-step LR multiplier that a ``LambdaLR`` runs. A time budget
(:mod:`similarity.budget`) learns how many steps fit only after training has started, so the decay can be
re-fitted mid-run with :func:`refit`: from the current step on, the multiplier falls from its current value
to the floor at the new last step, continuously (no jump), and never stops at a high LR.

A re-fit resumes the cosine at the phase of the current value, it does not start a new cosine there: a
cosine's top is flat, so a run re-fitted at every epoch end (as a budget does, by plus or minus one epoch)
would otherwise keep its LR near the peak until the last few epochs and then drop it all at once (measured:
74% of the peak LR after 18 of 25 epochs on Fashion-MNIST).
"""

from __future__ import annotations

import math

import torch

FLOOR = 0.01  # the multiplier at the last step: 1% of the peak LR
MAX_WARMUP_SHARE = 0.2  # a re-fit never leaves more than this share of the steps to warm-up


class WarmupCosine:
    """LR multiplier per optimiser step: ``(step + 1) / warmup_steps`` during warm-up, then half-cosine
    segments down to ``floor``. The last training step (index ``total_steps - 1``) runs at ``floor``.

    Each segment is ``(start_step, start_phase, end_step)``: from ``start_step`` to ``end_step`` the cosine's
    phase runs linearly from ``start_phase`` (0: the top) to 1 (the floor); :meth:`retarget` starts a new one.
    """

    def __init__(self, total_steps: int, warmup_steps: int, floor: float = FLOOR) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be in [0, 1], got {floor}")
        self.floor = floor
        self.warmup_steps = min(warmup_steps, total_steps - 1)
        self.total_steps = total_steps
        self._segments = [(self.warmup_steps, 0.0, total_steps - 1)]
        self._ramp = (-1, 0.0)  # (step, value) the warm-up rises from, linearly, to 1.0 at warmup_steps - 1

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            ramp_step, ramp_value = self._ramp
            return ramp_value + (1.0 - ramp_value) * (step - ramp_step) / (self.warmup_steps - 1 - ramp_step)
        start, phase, end = next(seg for seg in reversed(self._segments) if seg[0] <= step)
        if step >= end:
            return self.floor
        return self._at_phase(phase + (1.0 - phase) * (step - start) / (end - start))

    def _at_phase(self, phase: float) -> float:
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * phase))

    def _phase_of(self, value: float) -> float:
        """The cosine phase in [0, 1] at which the multiplier is ``value`` (the inverse of :meth:`_at_phase`)."""
        unit = (value - self.floor) / (1.0 - self.floor) if self.floor < 1.0 else 0.0
        return math.acos(min(1.0, max(-1.0, 2.0 * unit - 1.0))) / math.pi

    def retarget(self, step: int, total_steps: int) -> None:
        """From ``step`` (the next step to run) on, decay to the floor at step ``total_steps - 1`` instead.

        Still warming up: the warm-up is shortened to at most ``MAX_WARMUP_SHARE`` of the new total (never
        below ``step``, which it has reached), and the cosine follows it.
        """
        total_steps = max(total_steps, step + 1)
        if step < self.warmup_steps:
            value = self(step)
            warmup = min(self.warmup_steps, max(1, int(MAX_WARMUP_SHARE * total_steps)))
            if warmup - 1 > step:  # warm-up goes on, shorter, from where the LR stands; then one cosine
                self._ramp = (step, value)
                self.warmup_steps = warmup
                self._segments = [(warmup, 0.0, total_steps - 1)]
            else:  # the shorter warm-up would be over: decay from where the LR stands
                self.warmup_steps = step
                self._segments = [(step, self._phase_of(value), total_steps - 1)]
        else:
            self._segments.append((step, self._phase_of(self(step)), total_steps - 1))
        self.total_steps = total_steps


def build_lr_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                      warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping :class:`WarmupCosine` once per optimiser step (the same shape for every group)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps))


def refit(schedule: torch.optim.lr_scheduler.LambdaLR, total_steps: int) -> None:
    """Re-fit the decay of a :func:`build_lr_schedule` schedule to end at ``total_steps``, from the step it is at,
    and set the optimiser's current LRs to match."""
    shape = schedule.lr_lambdas[0]
    if not isinstance(shape, WarmupCosine):
        raise ValueError(f"refit needs a WarmupCosine schedule, got {type(shape).__name__}")
    step = schedule.last_epoch
    shape.retarget(step, total_steps)
    lrs = [base * shape(step) for base in schedule.base_lrs]
    for group, lr in zip(schedule.optimizer.param_groups, lrs):
        group["lr"] = lr
    schedule._last_lr = lrs  # what get_last_lr() reports; LambdaLR has no public setter


def current_multiplier(schedule: torch.optim.lr_scheduler.LambdaLR) -> float:
    """The multiplier the next optimiser step runs at (1.0 = the peak LR)."""
    return float(schedule.lr_lambdas[0](schedule.last_epoch))

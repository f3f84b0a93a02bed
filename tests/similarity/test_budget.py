"""The time budget shapes the schedule: on a fake clock, runs end inside the budget with the LR annealed, epochs
whole, and a machine that slows down still ends annealed (fewer epochs, never a stop at a high LR)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
import torch

from similarity.budget import TimeBudget, fit_steps
from similarity.checkpoint import load_checkpoint
from similarity.models import EmbeddingNet
from similarity.schedule import FLOOR, WarmupCosine
from similarity.train import train
from tests.conftest import tiny_config


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(step_seconds: Callable[[int], float], *, budget: float = 600.0, steps_per_epoch: int = 50,
             max_epochs: int = 40, val_seconds: float = 4.0, final_seconds: float = 8.0,
             first_step_extra: float = 0.0):
    """A training loop on a fake clock: ``step_seconds(epoch)`` per step, ``val_seconds`` per epoch end, and
    ``first_step_extra`` more for each epoch's first step (a DataLoader starting its workers)."""
    clock = FakeClock()
    shape = WarmupCosine(steps_per_epoch * max_epochs, steps_per_epoch // 2)
    plan = TimeBudget(budget, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs, batch_size=32,
                      eval_images_per_epoch=200, final_eval_images=400, clock=clock,
                      on_replan=lambda total: shape.retarget(plan.done, total))
    lrs, epoch_steps = [], []
    while not plan.finished:
        steps = 0
        for _ in plan.steps(range(steps_per_epoch)):
            lrs.append(shape(len(lrs)))  # the multiplier this step runs at
            clock.now += step_seconds(len(epoch_steps) + 1) + (first_step_extra if steps == 0 else 0.0)
            steps += 1
        epoch_steps.append(steps)
        clock.now += val_seconds
        plan.epoch_done()
    clock.now += final_seconds
    return clock.now, lrs, epoch_steps, plan


def test_a_steady_machine_ends_annealed_within_the_budget_on_whole_epochs():
    end, lrs, epoch_steps, plan = simulate(lambda epoch: 1.0)
    assert end <= 600.0
    assert lrs[-1] == pytest.approx(FLOOR)
    assert set(epoch_steps) == {50}  # every epoch whole: nothing cut off
    # 1 s/step, 4 s/epoch end, 8 s final + 3% kept: 11 epochs of 54 s fit 600 s, 12 do not
    assert len(epoch_steps) == 10 or len(epoch_steps) == 11
    assert plan.stop_reason().startswith("time budget")


def test_a_machine_that_slows_down_still_ends_annealed_within_the_budget():
    end, lrs, epoch_steps, plan = simulate(lambda epoch: 1.0 if epoch <= 3 else 2.0)
    assert end <= 600.0
    assert lrs[-1] == pytest.approx(FLOOR)
    assert len(epoch_steps) < plan.plans[0].epochs  # the first plan was shrunk
    # the LR only ever falls after warm-up: re-fits bend the curve down, they never jump it up
    peak = lrs.index(max(lrs))
    assert all(b <= a + 1e-12 for a, b in zip(lrs[peak:], lrs[peak + 1:]))


def test_slow_first_steps_of_each_epoch_neither_swing_the_plan_nor_waste_the_budget():
    """Each epoch's first step costs 10 s more (workers starting): 60 s a whole epoch. The plan must settle on
    the epochs that fit, not shrink every tenth of an epoch and grow back at its end, and leave less than one
    epoch of the budget unused."""
    end, lrs, epoch_steps, plan = simulate(lambda epoch: 1.0, first_step_extra=10.0)
    assert end <= 600.0 and lrs[-1] == pytest.approx(FLOOR)
    assert set(epoch_steps) == {50}
    # 60 s of steps + 4 s of validation an epoch, 8 s of final evaluation, 18 s (3%) kept free: 8 epochs fit
    assert len(epoch_steps) == 8
    assert 600.0 - end < 64.0 + 18.0  # less than one epoch unused, beyond what is kept free
    after_first_epoch = [p.epochs for p in plan.plans if p.at_step >= 50]
    assert len(set(after_first_epoch)) <= 1  # settled after the first whole epoch was measured


def test_a_sudden_slowdown_cuts_the_last_epoch_short_at_the_floor():
    end, lrs, epoch_steps, _ = simulate(lambda epoch: 1.0 if epoch <= 9 else 6.0)
    assert end <= 600.0 and lrs[-1] == pytest.approx(FLOOR)
    assert epoch_steps[-1] < 50  # no time for the whole epoch: it ended early, annealed


def test_max_epochs_bound_a_generous_budget():
    end, lrs, epoch_steps, plan = simulate(lambda epoch: 0.01, max_epochs=5)
    assert epoch_steps == [50] * 5 and lrs[-1] == pytest.approx(FLOOR)
    assert plan.stop_reason() == "finished all epochs"


def test_fit_steps_cuts_the_current_epoch_only_when_no_whole_one_fits():
    whole = fit_steps(100.0, done=10, epoch_start=0, epochs_done=0, steps_per_epoch=20, max_epochs=10,
                      step_seconds=1.0, epoch_overhead=5.0)
    assert whole == 80  # 70 more steps + 4 epoch ends = 90 s; 100 steps would be 110 s
    cut = fit_steps(6.0, done=10, epoch_start=0, epochs_done=0, steps_per_epoch=20, max_epochs=10,
                    step_seconds=1.0, epoch_overhead=2.0)
    assert cut == 14
    assert fit_steps(-5.0, done=10, epoch_start=0, epochs_done=0, steps_per_epoch=20, max_epochs=10,
                     step_seconds=1.0, epoch_overhead=2.0) == 11  # out of time: one last step, at the floor


@contextmanager
def model_time(clock: FakeClock, step_seconds: Callable[[int], float], embed_seconds: float):
    """Advance ``clock`` on every EmbeddingNet forward: ``step_seconds(n)`` for the n-th training batch,
    ``embed_seconds`` for an evaluation batch."""
    steps = [0]

    def hook(module, args, output):
        if isinstance(module, EmbeddingNet):
            if module.training:
                steps[0] += 1
                clock.now += step_seconds(steps[0])
            else:
                clock.now += embed_seconds

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def fmnist_tiny(fmnist_small):
    """200 images, 20 per class: 5 training steps of 32 an epoch."""
    keep = np.concatenate([np.flatnonzero(fmnist_small.labels == c)[:20] for c in range(10)])
    return fmnist_small.subset(np.sort(keep))


@pytest.mark.parametrize("slow_after", [None, 15])
def test_training_on_a_fake_clock_ends_annealed_within_the_budget(fmnist_tiny, tmp_path, slow_after):
    clock = FakeClock()
    config = tiny_config(epochs=40, budget_minutes=0.5, batch_size=32, threads=1)
    config = replace(config, model=replace(config.model, width=8))  # the budget is fake: keep the real work small
    with model_time(clock, lambda n: 1.0 if slow_after is None or n <= slow_after else 2.5, embed_seconds=0.1):
        result = train(fmnist_tiny, config, tmp_path / "run", progress=False, clock=clock)
    assert result.wall_seconds == clock.now <= 30.0
    assert result.history[-1]["lr"] == pytest.approx(config.lr * FLOOR)
    assert result.stopped_because.startswith("time budget")
    budget = load_checkpoint(result.checkpoint_path).extra["budget"]
    assert budget["planned_epochs"] == len(result.history) < 40
    planned = [plan["epochs"] for plan in budget["plans"]]
    if slow_after is None:  # steady: every epoch whole (the plan grew once validation had been timed)
        assert planned[-1] == len(result.history) and budget["total_steps"] == 5 * len(result.history)
    else:  # slower: the plan shrank, and the last epoch ended early to stay inside the budget
        assert max(planned) > len(result.history) and budget["total_steps"] < 5 * len(result.history)


def test_the_deprecated_max_minutes_is_the_budget():
    assert tiny_config(max_minutes=3.0).time_budget_minutes == 3.0
    assert tiny_config(max_minutes=3.0, budget_minutes=2.0).time_budget_minutes == 2.0
    with pytest.raises(ValueError, match="budget_minutes"):
        tiny_config(budget_minutes=-1.0)

"""The time budget shapes the schedule: on a fake clock, runs end inside the budget with the LR annealed, epochs
whole, a machine that slows down still ends annealed (fewer epochs, never a stop at a high LR), and a slow start
(a shared CPU, a compile) is forgotten: the plan grows to the budget while the LR is still high."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pytest
import torch

from similarity.budget import GROWTH_UNTIL, TimeBudget, fit_steps
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


class Step(NamedTuple):
    """What a simulated step's cost may depend on."""

    epoch: int  # from 1
    index: int  # steps before this one in the run
    of_epoch: int  # steps before this one in its epoch
    now: float  # the fake clock when the step starts


class Run(NamedTuple):
    end: float  # the fake clock after the final evaluation
    lrs: list[float]  # the LR multiplier each step ran at
    epoch_steps: list[int]  # steps run in each epoch
    plan: TimeBudget
    at_epoch_end: list[bool]  # per plan in plan.plans: whether epoch_done made it (else a check inside an epoch)


def simulate(step_seconds: Callable[[Step], float], *, budget: float = 600.0, steps_per_epoch: int = 50,
             max_epochs: int = 40, val_seconds: float = 4.0, final_seconds: float = 8.0,
             ignore_steps: int = 2) -> Run:
    """A training loop on a fake clock, as the trainer runs one: each epoch's batches through ``plan.steps``,
    ``step_seconds(step)`` per step, ``val_seconds`` of validation before each ``epoch_done``, ``final_seconds`` of
    final evaluation once the plan is finished. The LR shape is re-fitted to every plan, as ``refit`` does."""
    clock = FakeClock()
    shape = WarmupCosine(steps_per_epoch * max_epochs, steps_per_epoch // 2)
    plan = TimeBudget(budget, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs, batch_size=32,
                      eval_images_per_epoch=200, final_eval_images=400, clock=clock, ignore_steps=ignore_steps,
                      on_replan=lambda total: shape.retarget(plan.done, total))
    lrs, epoch_steps, at_epoch_end = [], [], []
    while not plan.finished:
        steps = 0
        for _ in plan.steps(range(steps_per_epoch)):
            lrs.append(shape(len(lrs)))  # the multiplier this step runs at
            clock.now += step_seconds(Step(len(epoch_steps) + 1, len(lrs) - 1, steps, clock.now))
            steps += 1
        epoch_steps.append(steps)
        clock.now += val_seconds
        at_epoch_end += [False] * (len(plan.plans) - len(at_epoch_end))
        plan.epoch_done()
        at_epoch_end += [True] * (len(plan.plans) - len(at_epoch_end))
    clock.now += final_seconds
    return Run(clock.now, lrs, epoch_steps, plan, at_epoch_end)


def assert_annealed_inside(run: Run, budget: float) -> None:
    """The run ended inside the budget on its plan's last step, at the floor, its LR never jumping up after the
    peak (re-fits bend the curve, they never restart it)."""
    assert run.end <= budget
    assert run.plan.done == run.plan.total_steps and run.lrs[-1] == pytest.approx(FLOOR)
    peak = run.lrs.index(max(run.lrs))
    assert all(b <= a + 1e-12 for a, b in zip(run.lrs[peak:], run.lrs[peak + 1:]))


def lr_halfway(run: Run) -> float:
    """The LR multiplier half-way through the run's steps: a single cosine over the run gives about 0.5."""
    return run.lrs[len(run.lrs) // 2]


def assert_grew_only_early(run: Run) -> None:
    """Inside an epoch a plan grew only while fewer than GROWTH_UNTIL of its steps were done."""
    plans = run.plan.plans
    for before, after, at_epoch_end in zip(plans, plans[1:], run.at_epoch_end[1:]):
        if after.total_steps > before.total_steps and not at_epoch_end:
            assert after.at_step < GROWTH_UNTIL * before.total_steps


def test_a_steady_machine_ends_annealed_within_the_budget_on_whole_epochs():
    run = simulate(lambda step: 1.0)
    assert_annealed_inside(run, 600.0)
    assert set(run.epoch_steps) == {50}  # every epoch whole: nothing cut off
    # 1 s/step, 4 s/epoch end, 8 s final + 3% kept: 11 epochs of 54 s fit 600 s, 12 do not
    assert len(run.epoch_steps) == 10 or len(run.epoch_steps) == 11
    assert run.plan.stop_reason().startswith("time budget")


def test_a_machine_that_slows_down_still_ends_annealed_within_the_budget():
    run = simulate(lambda step: 1.0 if step.epoch <= 3 else 2.0)
    assert_annealed_inside(run, 600.0)
    assert len(run.epoch_steps) < run.plan.plans[0].epochs  # the first plan was shrunk


def test_slow_first_steps_of_each_epoch_neither_swing_the_plan_nor_waste_the_budget():
    """Each epoch's first step costs 10 s more (workers starting): 60 s a whole epoch. The plan must settle on
    the epochs that fit, not shrink every tenth of an epoch and grow back at its end, and leave less than one
    epoch of the budget unused."""
    run = simulate(lambda step: 1.0 + (10.0 if step.of_epoch == 0 else 0.0))
    assert_annealed_inside(run, 600.0)
    assert set(run.epoch_steps) == {50}
    # 60 s of steps + 4 s of validation an epoch, 8 s of final evaluation, 18 s (3%) kept free: 8 epochs fit
    assert len(run.epoch_steps) == 8
    assert 600.0 - run.end < 64.0 + 18.0  # less than one epoch unused, beyond what is kept free
    after_first_epoch = [p.epochs for p in run.plan.plans if p.at_step >= 50]
    assert len(set(after_first_epoch)) <= 1  # settled after the first whole epoch was measured


def test_a_sudden_slowdown_cuts_the_last_epoch_short_at_the_floor():
    run = simulate(lambda step: 1.0 if step.epoch <= 9 else 6.0)
    assert_annealed_inside(run, 600.0)
    assert run.epoch_steps[-1] < 50  # no time for the whole epoch: it ended early, annealed


def test_max_epochs_bound_a_generous_budget():
    run = simulate(lambda step: 0.01, max_epochs=5)
    assert run.epoch_steps == [50] * 5 and run.lrs[-1] == pytest.approx(FLOOR)
    assert run.plan.stop_reason() == "finished all epochs"


# A 15-minute budget of 40-step epochs at 1 s a step (2 s of validation, 4 s of final evaluation): an epoch is
# under 5% of the budget, so a run that plans well leaves less than 10% unused (3% is kept free).
FIFTEEN_MINUTES = dict(budget=900.0, steps_per_epoch=40, max_epochs=60, val_seconds=2.0, final_seconds=4.0)


@pytest.mark.parametrize("slow_for, factor", [(120.0, 4.0), (225.0, 4.5)])
def test_a_slow_start_is_forgotten_and_the_budget_used(slow_for, factor):
    """A CPU shared with another job for the first 2 minutes, or for the first quarter of the budget: the
    first plans fit few epochs at the slow speed; once the machine speeds up, the plan grows to the budget."""
    run = simulate(lambda step: factor if step.now < slow_for else 1.0, **FIFTEEN_MINUTES)
    assert_annealed_inside(run, 900.0)
    assert run.end >= 0.9 * 900.0
    assert run.plan.planned_epochs > run.plan.plans[0].epochs  # it grew
    # ... while the LR was high: a plan that annealed over the slow start's epochs and grew only at an epoch end
    # would be at 0.2-0.3 here
    assert lr_halfway(run) >= 0.35
    assert_grew_only_early(run)


def test_a_compile_like_start_is_forgotten_and_the_budget_used():
    """The first 5 steps take 30 s each (torch.compile), more than the 2 ignored steps cover. The first epoch's
    extra 87 s is paid once: charged to every epoch left, it would shrink the plan by a third."""
    run = simulate(lambda step: 30.0 if step.index < 5 else 1.0, **FIFTEEN_MINUTES)
    assert_annealed_inside(run, 900.0)
    assert run.end >= 0.9 * 900.0
    assert all(p.total_steps >= run.plan.plans[0].total_steps for p in run.plan.plans)  # never shrank
    assert lr_halfway(run) >= 0.45
    assert_grew_only_early(run)


def test_a_first_plan_of_one_epoch_grows_inside_that_epoch():
    """200-step epochs, 5x slower for the first 2 minutes: the first plan cannot even finish the first epoch.
    The machine speeds up early in that epoch, and the plan grows there, not only at an epoch end it would
    already have finished at."""
    run = simulate(lambda step: 5.0 if step.now < 120.0 else 1.0, budget=900.0, steps_per_epoch=200,
                   max_epochs=20, val_seconds=2.0, final_seconds=4.0)
    assert_annealed_inside(run, 900.0)
    first = run.plan.plans[0]
    assert first.epochs == 1 and first.total_steps < 200
    grown = [p.at_step for p in run.plan.plans if p.total_steps > 200]
    assert grown and grown[0] < 100  # inside the first epoch, while its LR was still high
    # steps of 1 s and 2 s of validation: 3 epochs fit what is left after 2 slow minutes, 4 would not
    assert run.epoch_steps == [200] * 3
    assert lr_halfway(run) >= 0.35
    assert_grew_only_early(run)


@pytest.mark.parametrize("slow_from, factor", [(400.0, 2.5), (800.0, 4.0)])
def test_a_machine_that_slows_down_mid_run_shrinks_the_plan_and_never_overruns(slow_from, factor):
    run = simulate(lambda step: 1.0 if step.now < slow_from else factor, **FIFTEEN_MINUTES)
    assert_annealed_inside(run, 900.0)
    assert run.plan.total_steps < max(p.total_steps for p in run.plan.plans)  # it shrank
    assert_grew_only_early(run)


@pytest.mark.parametrize("steps_per_epoch", [5, 40, 200])
def test_steady_steps_make_few_plans(steps_per_epoch):
    """Constant step times: the first plan, perhaps one more once validation has been timed; no flapping."""
    run = simulate(lambda step: 1.0, budget=900.0, steps_per_epoch=steps_per_epoch, max_epochs=1000,
                   val_seconds=2.0, final_seconds=4.0)
    assert_annealed_inside(run, 900.0)
    assert len(run.plan.plans) <= 3


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

"""The LR schedule: warm-up, cosine to the floor at the last step, and re-fits that never jump."""

from __future__ import annotations

import pytest
import torch

from similarity.schedule import FLOOR, WarmupCosine, build_lr_schedule, current_multiplier, refit


def test_warmup_then_cosine_reaches_the_floor_at_the_last_step():
    shape = WarmupCosine(total_steps=100, warmup_steps=10)
    values = [shape(step) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(FLOOR)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # decays monotonically after warm-up


@pytest.mark.parametrize("at, new_total", [(40, 60), (40, 200), (5, 30), (5, 12)])
def test_retarget_is_continuous_and_ends_at_the_floor(at, new_total):
    shape = WarmupCosine(total_steps=100, warmup_steps=10)
    before = shape(at)
    shape.retarget(at, new_total)
    assert shape(at) == pytest.approx(before)  # no jump where the re-fit happens
    assert shape(new_total - 1) == pytest.approx(FLOOR)
    assert shape.warmup_steps <= max(at, int(0.2 * new_total))


def test_refits_by_an_epoch_either_way_keep_the_cosine_shape():
    """A budget re-fits at every epoch end, the plan moving by an epoch either way. Each re-fit resumes the
    cosine at its current phase, so half-way through the run the LR is near half the peak, not still at it."""
    epoch, epochs = 100, 21
    shape = WarmupCosine(total_steps=epoch * epochs, warmup_steps=0)
    values = []
    for step in range(epoch * epochs):
        if step and step % epoch == 0:
            shape.retarget(step, epoch * (epochs + (1 if (step // epoch) % 2 else -1)))
        values.append(shape(step))
    halfway = values[epoch * epochs // 2]
    assert 0.35 < halfway < 0.65  # one cosine gives 0.5 here; restarting a flat-topped cosine gave 0.8+
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(FLOOR, abs=0.02)


def test_refit_updates_the_optimizer_lr():
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    schedule = build_lr_schedule(optimizer, total_steps=50, warmup_steps=0)
    for _ in range(20):
        optimizer.step()
        schedule.step()
    refit(schedule, total_steps=21)  # the next step is the last one
    assert current_multiplier(schedule) == pytest.approx(FLOOR)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * FLOOR)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(0, 0)
    with pytest.raises(ValueError, match="floor"):
        WarmupCosine(10, 1, floor=2.0)

"""Every objective decreases on a toy problem; the pair objective uses exactly the sampler's pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from similarity.config import LossConfig
from similarity.losses import PairContrastive, build_objective
from similarity.samplers import ClassBalancedSampler, PairSampler, ShuffledBatches


def _toy(seed=0, n=400, classes=4, dim=16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 1.5
    labels = torch.arange(n) % classes
    return centres[labels] + torch.randn(n, dim, generator=g), labels


@pytest.mark.parametrize("name,kind", [("contrastive", "pairs"), ("triplet", "m_per_class"),
                                       ("multisimilarity", "m_per_class"), ("normsoftmax", "random")])
def test_objective_decreases_on_toy_problem(name, kind):
    torch.manual_seed(0)
    x, y = _toy()
    rng = np.random.default_rng(0)
    sampler = {"pairs": lambda: PairSampler(y.numpy(), 32, 0.5, rng),
               "m_per_class": lambda: ClassBalancedSampler(y.numpy(), 8, 64, rng),
               "random": lambda: ShuffledBatches(len(y), 64, rng)}[kind]()
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    objective = build_objective(LossConfig(name=name), num_classes=4, embedding_dim=8, pair_batches=kind == "pairs")
    optimiser = torch.optim.Adam(list(model.parameters()) + list(objective.parameters()), lr=1e-2)

    def mean_loss():
        with torch.no_grad():
            return float(np.mean([objective(torch.nn.functional.normalize(model(x[b]), dim=1), y[b]).item()
                                  for b in PairSampler(y.numpy(), 32, 0.5, np.random.default_rng(5))]
                                 if kind == "pairs" else
                                 [objective(torch.nn.functional.normalize(model(x), dim=1), y).item()]))

    before = mean_loss()
    for _ in range(15):
        for batch in sampler:
            loss = objective(torch.nn.functional.normalize(model(x[batch]), dim=1), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    after = mean_loss()
    assert after < 0.7 * before, (before, after)


def test_pair_contrastive_uses_the_sampler_pairs():
    """Only pair i = (i, P+i) counts: moving a non-partner changes nothing, moving a partner does.
    (Two pairs of each kind: pytorch-metric-learning returns 0 when each index list has <= 1 entry.)"""
    objective = build_objective(LossConfig(name="contrastive", pos_margin=1.0, neg_margin=0.0), num_classes=2,
                                embedding_dim=2, pair_batches=True)
    assert isinstance(objective, PairContrastive)
    x_axis, y_axis = [1.0, 0.0], [0.0, 1.0]
    # pairs: (0,4) pos identical, (1,5) pos identical, (2,6) neg orthogonal, (3,7) neg orthogonal
    e = torch.tensor([x_axis, y_axis, x_axis, y_axis, x_axis, y_axis, y_axis, x_axis])
    y = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0])
    assert objective(e, y).item() == pytest.approx(0.0, abs=1e-6)
    # a non-pair that violates the labels (rows 1 and 2: different labels, made identical) is ignored
    ignored = e.clone()
    ignored[[1, 2]] = torch.tensor([0.6, 0.8])
    ignored[[5, 6]] = torch.tensor([0.6, 0.8])  # keep pairs (1,5) identical and (2,6) as before
    assert objective(ignored, y).item() == pytest.approx(objective.loss(ignored, y, indices_tuple=(
        torch.tensor([0, 1]), torch.tensor([4, 5]), torch.tensor([2, 3]), torch.tensor([6, 7]))).item())
    assert objective.loss(ignored, y).item() > objective(ignored, y).item()
    moved = e.clone()
    moved[6] = torch.tensor(x_axis)  # now the negative pair (2, 6) is identical -> penalised
    assert objective(moved, y).item() > 0.4

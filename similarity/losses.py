"""Training objectives. Each is an ``nn.Module`` called as ``objective(embeddings, labels) -> loss``.

The losses, miners and distances are pytorch-metric-learning's; this module only composes them
and, for the Siamese set-up, turns the :class:`~similarity.samplers.PairSampler` batch layout into
explicit pairs.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import distances, losses, miners
from torch import nn

from similarity.config import LossConfig


class PairContrastive(nn.Module):
    """Contrastive loss on the explicit pairs of a :class:`PairSampler` batch: pair i is
    (embeddings[i], embeddings[P + i]); same label -> pulled together, else pushed apart."""

    def __init__(self, loss: losses.BaseMetricLossFunction):
        super().__init__()
        self.loss = loss

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        half = embeddings.shape[0] // 2
        first = torch.arange(half, device=embeddings.device)
        second = first + half
        same = labels[first] == labels[second]
        indices = (first[same], second[same], first[~same], second[~same])
        return self.loss(embeddings, labels, indices_tuple=indices)


class MinedLoss(nn.Module):
    """A pair/triplet loss on the tuples an in-batch miner selects."""

    def __init__(self, loss: losses.BaseMetricLossFunction, miner: miners.BaseMiner):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings, labels, indices_tuple=self.miner(embeddings, labels))


class ProxyLoss(nn.Module):
    """A proxy-based loss (one learnable vector per class); its parameters need the optimiser."""

    def __init__(self, loss: losses.BaseMetricLossFunction):
        super().__init__()
        self.loss = loss

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings, labels)


def build_objective(config: LossConfig, *, num_classes: int, embedding_dim: int,
                    pair_batches: bool) -> nn.Module:
    """The objective for ``config``. ``pair_batches`` says the batches come from a PairSampler."""
    cosine = distances.CosineSimilarity()
    if config.name == "contrastive":
        loss = losses.ContrastiveLoss(pos_margin=config.pos_margin, neg_margin=config.neg_margin, distance=cosine)
        if pair_batches:
            return PairContrastive(loss)
        return MinedLoss(loss, miners.PairMarginMiner(pos_margin=config.pos_margin, neg_margin=config.neg_margin,
                                                      distance=cosine))
    if config.name == "triplet":
        loss = losses.TripletMarginLoss(margin=config.triplet_margin, distance=cosine)
        miner = miners.TripletMarginMiner(margin=config.triplet_margin, type_of_triplets=config.mining,
                                          distance=cosine)
        return MinedLoss(loss, miner)
    if config.name == "multisimilarity":
        return MinedLoss(losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5),
                         miners.MultiSimilarityMiner(epsilon=0.1))
    if config.name == "normsoftmax":
        return ProxyLoss(losses.NormalizedSoftmaxLoss(num_classes, embedding_dim, temperature=config.temperature))
    raise ValueError(f"unknown loss {config.name!r}")  # LossConfig validates; kept for safety

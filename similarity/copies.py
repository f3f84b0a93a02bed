"""The copy objective's parts: its loss, its validation without labels, and background score normalisation.

After SSCD (Pizzi et al., 2022, "A Self-Supervised Descriptor for Image Copy Detection"):

- :class:`CopyObjective`: InfoNCE (pytorch-metric-learning's ``NTXentLoss`` in its ``SelfSupervisedLoss``
  wrapper) on the two views of each image, every other image of the batch a negative, plus the KoLeo entropy
  regulariser (:func:`koleo`) weighted by ``entropy_weight``: it spreads the descriptors over the sphere, so that
  a cosine threshold means the same thing everywhere.
- :class:`CopyValidation`: held-out images and seeded copies of them (:func:`similarity.copy_augment.make_copy`);
  each copy searches the held-out originals plus distractors (:func:`copy_retrieval_metrics`: recall@1, micro
  average precision, recall at 90% precision).
- :func:`background_offsets` / :func:`normalise_scores`: a query's mean similarity to its k nearest neighbours in
  a background set (images like the collection's, none of them copies of the query) subtracted from its scores,
  so that queries from crowded regions of the space do not match everything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pytorch_metric_learning import losses
from torch import nn

from similarity.config import CopyConfig
from similarity.copy_augment import make_copy
from similarity.data import LabelledImages
from similarity.embedder import ImageEmbedder
from similarity.metrics import top_k_neighbors

log = logging.getLogger(__name__)

PRECISION_TARGET = 0.9  # recall is reported at this precision (DISC21's "recall at 90% precision")
EMBED_CHUNK = 64  # copies embedded at once


def koleo(embeddings: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The Kozachenko-Leonenko entropy regulariser of (n, d) L2-normalised embeddings, n >= 2: the mean over
    rows of ``-log(distance to the nearest other row)``. Lower when the rows are spread out; minimising it
    raises the differential entropy of the descriptors. A scalar tensor."""
    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise ValueError(f"koleo needs (n >= 2, d) embeddings, got {tuple(embeddings.shape)}")
    with torch.no_grad():  # which neighbour is nearest is a choice, not a gradient path
        sims = embeddings @ embeddings.T
        sims.fill_diagonal_(-2.0)
        nearest = sims.argmax(dim=1)
    distances = (embeddings - embeddings[nearest]).norm(dim=1)
    return -torch.log(distances + eps).mean()


class CopyObjective(nn.Module):
    """InfoNCE on positive pairs plus ``entropy_weight`` x KoLeo. Called as ``objective(embeddings, labels)`` on
    the batch layout of :func:`similarity.copy_augment.collate_pairs`: (2B, d) embeddings, first views then second
    views; ``labels`` (2B,) are checked to be that layout."""

    def __init__(self, temperature: float = 0.05, entropy_weight: float = 30.0) -> None:
        super().__init__()
        self.info_nce = losses.SelfSupervisedLoss(losses.NTXentLoss(temperature=temperature), symmetric=True)
        self.entropy_weight = entropy_weight
        self._sums: dict[str, float] = {}
        self._steps = 0

    @classmethod
    def from_config(cls, config: CopyConfig) -> CopyObjective:
        return cls(config.temperature, config.entropy_weight)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        half = len(embeddings) // 2
        if len(embeddings) != 2 * half or half < 2 or not torch.equal(labels[:half].cpu(), labels[half:].cpu()):
            raise ValueError("the copy objective needs batches of two views of >= 2 images (collate_pairs)")
        first, second = embeddings[:half], embeddings[half:]
        contrastive = self.info_nce(first, second)
        # KoLeo within each view set: the other view of the same image is a copy, not a neighbour to push away
        entropy = (koleo(first) + koleo(second)) / 2
        if self.training:
            for name, term in (("info_nce", contrastive), ("koleo", entropy)):
                self._sums[name] = self._sums.get(name, 0.0) + float(term.detach())
            self._steps += 1
        return contrastive + self.entropy_weight * entropy

    def epoch_terms(self) -> dict[str, float]:
        """The mean of each term over the training steps since the last call (``train_info_nce_loss``,
        ``train_koleo_loss``: the curves draw them with the loss), then starts counting again."""
        terms = {f"train_{name}_loss": total / self._steps for name, total in self._sums.items()} if self._steps else {}
        self._sums, self._steps = {}, 0
        return terms


# ----------------------------------------------------------------------------- validation without labels


def micro_average_precision(scores: np.ndarray, correct: np.ndarray, n_true: int) -> float:
    """DISC21's µAP: every (query, reference, score) prediction of every query (``scores``, ``correct``: (nq, k),
    a query's top k), ranked by score across queries, as one precision-recall curve against ``n_true`` true pairs
    (the copies).  Predictions with equal scores are one step of the curve (precision at its end), so the order
    of ties changes nothing: a hash's integer distances get no credit from an arbitrary order."""
    if n_true < 1:
        raise ValueError("no true pairs to find")
    flat_scores = np.asarray(scores, dtype=np.float64).ravel()
    flat_correct = np.asarray(correct, dtype=bool).ravel()
    order = np.argsort(-flat_scores, kind="stable")
    ranked, hits = flat_scores[order], flat_correct[order]
    ends = np.append(np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1)  # last index of each tie group
    found = np.cumsum(hits)[ends]
    new = np.diff(np.concatenate([[0], found]))
    precision = found / (ends + 1)
    return float((precision * new).sum() / n_true)


def copy_retrieval_metrics(copies: np.ndarray, originals: np.ndarray, gallery: np.ndarray, *, k: int = 10,
                           offsets: np.ndarray | None = None, beta: float = 1.0) -> dict[str, float]:
    """Copy detection scores. copies: (nq, d) descriptors of copies; originals: (nq,) int64, the gallery row each
    copy was made from; gallery: (ng, d); all L2-normalised float32. ``offsets`` (nq,): score-normalise the
    similarities first (:func:`normalise_scores`; it changes the ranking across queries, not within one).

    ``recall_at_1``: share of copies whose nearest gallery item is their original. ``micro_ap``: the (query,
    gallery item) pairs of every query's top ``k``, ranked by score across queries, scored as one
    precision-recall curve against the nq true pairs (DISC21's µAP). ``recall_at_p90``: the most true pairs found
    above a single score threshold while 90% of the pairs above it are true, over nq; ``threshold_at_p90``: that
    threshold (NaN when precision never reaches 90%)."""
    if len(copies) != len(originals):
        raise ValueError(f"{len(copies)} copies but {len(originals)} originals")
    if len(copies) == 0:
        raise ValueError("no copies to score")
    sims, idx = top_k_neighbors(copies, gallery, k)
    if offsets is not None:
        sims = normalise_scores(sims, offsets, beta)
    correct = idx == np.asarray(originals)[:, None]
    order = np.argsort(-sims.ravel(), kind="stable")
    ranked_scores, hits = sims.ravel()[order], correct.ravel()[order]
    found = np.cumsum(hits)
    precision = found / np.arange(1, len(hits) + 1)
    micro_ap = micro_average_precision(sims, correct, len(copies))
    precise = np.flatnonzero((precision >= PRECISION_TARGET) & hits)  # thresholds at a true pair, precise enough
    recall_p90 = float(found[precise[-1]] / len(copies)) if len(precise) else 0.0
    threshold = float(ranked_scores[precise[-1]]) if len(precise) else float("nan")
    return {"recall_at_1": float(correct[:, 0].mean()), "micro_ap": micro_ap, "recall_at_p90": recall_p90,
            "threshold_at_p90": threshold}


@dataclass
class CopyValidation:
    """Held-out images (``originals``), seeded copies of them, and ``distractors`` (other images) that share the
    gallery. The copies are made once, so every epoch scores the same task."""

    originals: LabelledImages
    distractors: LabelledImages | None
    copies: list[Image.Image]
    copy_of: np.ndarray  # (n_copies,) int64: the row of ``originals`` each copy was made from

    @classmethod
    def build(cls, originals: LabelledImages, distractors: LabelledImages | None, *, copies_per_image: int = 1,
              strength: float = 1.0, flip: bool = True, seed: int = 0) -> CopyValidation:
        """``copies_per_image`` copies of every original that decodes, each seeded by (seed, row, copy)."""
        copies, copy_of = [], []
        for i in range(len(originals)):
            image = originals.load(i)
            for c in range(copies_per_image):
                copies.append(make_copy(image, np.random.default_rng((seed, i, c)), strength, flip=flip))
                copy_of.append(i)
        return cls(originals, distractors, copies, np.asarray(copy_of, dtype=np.int64))

    @property
    def images(self) -> int:
        """Images embedded by one :meth:`score` call."""
        return len(self.originals) + len(self.copies) + (len(self.distractors) if self.distractors else 0)

    def embed(self, embedder: ImageEmbedder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(copy descriptors (n_copies, d), gallery descriptors (n_originals + n_distractors, d), the gallery row
        of each copy's original (n_copies,))."""
        originals = embedder.embed_data(self.originals, progress=False)
        if len(originals.kept) != len(self.originals):
            raise ValueError(f"{len(self.originals) - len(originals.kept)} held-out image(s) did not decode")
        gallery = [originals.embeddings]
        if self.distractors is not None and len(self.distractors):
            gallery.append(embedder.embed_data(self.distractors, progress=False).embeddings)
        copies = np.concatenate([embedder.embed_images(self.copies[start:start + EMBED_CHUNK])
                                 for start in range(0, len(self.copies), EMBED_CHUNK)])
        return copies, np.concatenate(gallery), self.copy_of

    def score(self, embedder: ImageEmbedder) -> dict[str, float]:
        """:func:`copy_retrieval_metrics` of the copies against the originals and distractors."""
        copies, gallery, copy_of = self.embed(embedder)
        return copy_retrieval_metrics(copies, copy_of, gallery)


# ----------------------------------------------------------------------------- background score normalisation


def background_offsets(query: np.ndarray, background: np.ndarray, k: int = 3) -> np.ndarray:
    """query: (nq, d), background: (nb, d), L2-normalised float32 -> (nq,) float32: each query's mean cosine
    similarity to its ``k`` nearest background descriptors (all of them when nb < k). SSCD's evaluation
    (``disc_eval.py``, ``--score_norm 1.0[0,2]``) averages the 3 nearest, with beta 1."""
    if len(background) == 0:
        raise ValueError("the background set is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sims, _ = top_k_neighbors(query, background, k)
    return sims.mean(axis=1).astype(np.float32)


def normalise_scores(similarities: np.ndarray, offsets: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """similarities: (nq, m) a query's cosine similarities to its candidates, offsets: (nq,) from
    :func:`background_offsets` -> (nq, m) ``similarities - beta * offsets``: above 0 (beta 1), a candidate is
    closer to the query than the query's nearest background images are on average. An inner-product index gives
    the same scores with ``[query, -beta * offset]`` searched against ``[reference, 1]``."""
    similarities = np.asarray(similarities, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.float32)
    if similarities.ndim != 2 or offsets.shape != (len(similarities),):
        raise ValueError(f"similarities (nq, m) and offsets (nq,) expected, got {similarities.shape} and "
                         f"{offsets.shape}")
    return similarities - beta * offsets[:, None]


__all__ = ["CopyObjective", "CopyValidation", "background_offsets", "copy_retrieval_metrics", "koleo",
           "micro_average_precision", "normalise_scores"]

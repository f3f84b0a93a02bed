"""The frozen blocks of a pretrained backbone, run once: activations cached for the start and for validation.

When only the last blocks of an EfficientNet train (``ModelConfig.trainable_blocks``), the frozen blocks compute
the same function of a plain (unaugmented) image every time. :func:`build_activation_cache` runs them once over
the plain training and validation images. From that cache:

- :func:`pca_head` and :func:`fit_head` give the starting point a head: the principal directions of the frozen
  features, or a linear probe fitted with the training loss (seconds: a linear layer on 1280-d features). The
  trainer scores both on validation and starts from the better, so epoch 0 is the frozen features with a fitted
  head, and fine-tuning starts from a head that already separates the classes ("linear probe, then fine-tune")
  rather than pulling the pretrained features apart to fit a random one;
- validation after every epoch runs the trained blocks only (:func:`embed_cached`).

With ``cache_views`` of 2 or more the cache also holds augmented views of each training image, and the epochs
draw one cached view per image (:func:`cached_batches`) and step only the last blocks
(:class:`similarity.models.StagedForward`): several times more epochs a minute on a CPU, but the same few views
every epoch. On TrashNet that over-fitted (training loss near 0 within 10 epochs, validation flat), so the
recipe caches the plain view only and its epochs augment afresh, through frozen blocks that run forward only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from similarity.batches import TrainDataset, seed_worker
from similarity.config import TrainConfig
from similarity.data import LabelledImages
from similarity.models import EmbeddingNet
from similarity.transforms import eval_transform, train_transform
from similarity.workers import worker_context

log = logging.getLogger(__name__)

CACHE_DTYPE = torch.float16  # activations are bounded block outputs: fp16 keeps them to 3 digits at half the memory
CACHE_BATCH = 64
HEAD_EPOCHS = 30  # linear-probe epochs over the cached views' features (seconds: 1280-d features, a linear layer)
HEAD_LR = 1e-2


@dataclass
class ActivationCache:
    """The frozen blocks' output. ``train``: (views, N, C, H, W) of the training images (only the first
    ``views`` filled); ``val``: (Nv, C, H, W) of the plain validation images, or None."""

    train: torch.Tensor
    views: int
    val: torch.Tensor | None
    seconds: float

    @property
    def bytes(self) -> int:
        total = self.train[: self.views].numel() * self.train.element_size()
        return total + (self.val.numel() * self.val.element_size() if self.val is not None else 0)


def activation_bytes(model: EmbeddingNet, image_size: int) -> int:
    """Bytes one cached image takes at ``image_size`` px (the frozen blocks' output in ``CACHE_DTYPE``)."""
    with torch.inference_mode():
        shape = model.eval().activations(torch.zeros(1, 3, image_size, image_size)).shape
    return int(np.prod(shape)) * torch.finfo(CACHE_DTYPE).bits // 8


def build_activation_cache(model: EmbeddingNet, train: LabelledImages, val: LabelledImages | None,
                           config: TrainConfig, *, deadline: Callable[[], float] | None = None,
                           progress: bool = False) -> ActivationCache:
    """Run ``model``'s frozen blocks over ``config.cache_views`` views of ``train`` (view 0 plain) and the plain
    ``val`` images. ``deadline`` (seconds left for caching, asked before each augmented view) stops adding
    views once the next one would not fit; at least the plain view and one augmented view are made."""
    started = time.perf_counter()
    model.eval()
    views = max(1, config.cache_views)
    probe = model.activations(torch.zeros(1, 3, config.preprocess.image_size, config.preprocess.image_size))
    shape = tuple(probe.shape[1:])
    cache = torch.empty((views, len(train), *shape), dtype=CACHE_DTYPE)
    plain = eval_transform(config.preprocess)
    augmented = train_transform(config.preprocess, config.augment, config.augment_strength, flip=config.augment_flip)
    bar = tqdm(total=views * len(train) + (len(val) if val is not None else 0), desc="caching activations",
               unit="img", disable=not progress, leave=False)
    val_cache = None
    if val is not None:
        val_cache = torch.empty((len(val), *shape), dtype=CACHE_DTYPE)
        _run_frozen(model, val, plain, val_cache, config, bar, seed=config.seed)
    made = 0
    for view in range(views):
        if view >= 2 and deadline is not None:
            per_view = (time.perf_counter() - started) / (made + (len(val) / len(train) if val is not None else 0))
            if deadline() < per_view:
                log.info("activation cache: %d of %d views fit the time set aside for caching", made, views)
                break
        _run_frozen(model, train, plain if view == 0 else augmented, cache[view], config, bar,
                    seed=config.seed + view)
        made += 1
    bar.close()
    result = ActivationCache(cache, made, val_cache, time.perf_counter() - started)
    log.info("activation cache: %d views of %d images, %s each, %.0f MB, %.1fs", made, len(train), shape,
             result.bytes / 1e6, result.seconds)
    return result


def _run_frozen(model: EmbeddingNet, data: LabelledImages, transform, out: torch.Tensor, config: TrainConfig,
                bar: tqdm, *, seed: int) -> None:
    """Fill ``out`` (N, C, H, W) with the frozen blocks' output for ``transform`` of each image of ``data``."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the augmentation's randomness in a worker-less loader
    loader = DataLoader(TrainDataset(data, transform), batch_size=CACHE_BATCH, shuffle=False,
                        num_workers=config.num_workers, worker_init_fn=seed_worker, generator=generator,
                        multiprocessing_context=worker_context(config.num_workers))
    start = 0
    with torch.inference_mode():
        for x, _ in loader:
            h = model.activations(x.contiguous(memory_format=torch.channels_last))
            out[start:start + len(x)] = h.to(CACHE_DTYPE)
            start += len(x)
            bar.update(len(x))


def cached_batches(cache: ActivationCache, labels: np.ndarray, batch_sampler,
                   rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (activations (B, C, H, W) float32, labels (B,)) batches: each image as one of its cached
    views, drawn with ``rng``."""
    views = rng.integers(0, cache.views, size=cache.train.shape[1])
    label_tensor = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    for batch in batch_sampler:
        batch = np.asarray(batch)
        h = cache.train[torch.from_numpy(views[batch]), torch.from_numpy(batch)].float()
        yield h.contiguous(memory_format=torch.channels_last), label_tensor[batch]


def embed_cached(model: EmbeddingNet, activations: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, dim) float32 of cached activations (N, C, H, W), the model in eval mode."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(activations), batch_size):
            h = activations[start:start + batch_size].float().contiguous(memory_format=torch.channels_last)
            out.append(model.forward_from(h).float().numpy())
    return np.concatenate(out) if out else np.empty((0, model.config.embedding_dim), dtype=np.float32)


def pooled_features(model: EmbeddingNet, activations: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Backbone features (N, feature_dim) of cached activations, the model in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():  # not inference_mode: the head trains on these
        for start in range(0, len(activations), batch_size):
            h = activations[start:start + batch_size].float().contiguous(memory_format=torch.channels_last)
            out.append(model.pooled_from(h))
    return torch.cat(out)


def view_features(model: EmbeddingNet, cache: ActivationCache) -> torch.Tensor:
    """Backbone features (views * N, feature_dim) of every cached view of the training images, view by view
    (the plain view's are the first N rows): computed once for both heads."""
    return torch.cat([pooled_features(model, cache.train[v]) for v in range(cache.views)])


def pca_head(model: EmbeddingNet, objective: torch.nn.Module, features: torch.Tensor, labels: np.ndarray) -> None:
    """Set ``model.head``'s projection to the top principal directions of the frozen features of the plain
    training view (centred: cosine in it is cosine between the centred features, what a kNN on the frozen
    features sees, less its least varying directions), and a proxy loss's proxies to the class centroids."""
    features = features[: len(labels)]  # the plain view
    linear = model.head[-1]
    mean = features.mean(dim=0)
    _, _, vh = torch.linalg.svd(features - mean, full_matrices=False)
    weight = torch.zeros_like(linear.weight)
    rows = min(len(vh), len(weight))
    weight[:rows] = vh[:rows]
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(-weight @ mean)
    set_centroid_proxies(model, objective, features, labels)


def set_centroid_proxies(model: EmbeddingNet, objective: torch.nn.Module, features: torch.Tensor,
                         labels: np.ndarray) -> None:
    """A proxy loss's proxies (``W``: (dim, classes)) set to the normalised class centroids of ``features``
    embedded by ``model.head``; other objectives are left as they are."""
    proxies = getattr(getattr(objective, "loss", None), "W", None)
    if proxies is None:
        return
    with torch.no_grad():
        model.head.eval()
        embedded = torch.nn.functional.normalize(model.head(features), dim=1)
        target = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        for c in range(proxies.shape[1]):
            members = embedded[target == c]
            if len(members):
                proxies[:, c] = torch.nn.functional.normalize(members.mean(dim=0), dim=0)


def fit_head(model: EmbeddingNet, objective: torch.nn.Module, features: torch.Tensor, labels: np.ndarray,
             config: TrainConfig, *, epochs: int = HEAD_EPOCHS) -> dict[str, float]:
    """Fit ``model.head`` and ``objective``'s parameters (the proxies) on the frozen features of every cached
    view of the training images, the backbone untouched (a linear probe with the training loss), from where
    they stand. Returns the probe's last-epoch loss and its seconds."""
    started = time.perf_counter()
    targets = torch.from_numpy(np.tile(np.asarray(labels, dtype=np.int64), len(features) // len(labels)))
    params = [*model.head.parameters(), *objective.parameters()]
    optimizer = torch.optim.AdamW(params, lr=HEAD_LR, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-len(features) // 256))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, HEAD_LR, total_steps=epochs * steps_per_epoch,
                                                   pct_start=0.1)
    generator = torch.Generator().manual_seed(config.seed)
    model.head.train()
    objective.train()
    loss_value = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator)
        total = 0.0
        for start in range(0, len(order), 256):
            rows = order[start:start + 256]
            embeddings = torch.nn.functional.normalize(model.head(features[rows]), dim=1)
            loss = objective(embeddings, targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        loss_value = total / len(order)
    model.eval()
    return {"loss": round(loss_value, 4), "seconds": round(time.perf_counter() - started, 2)}


__all__ = ["ActivationCache", "activation_bytes", "build_activation_cache", "cached_batches", "embed_cached",
           "fit_head", "pca_head", "pooled_features", "set_centroid_proxies", "view_features"]

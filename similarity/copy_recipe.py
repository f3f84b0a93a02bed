"""The copy objective's recipe: the class recipe's backbone, input size, depth and budget, turned into a copy
descriptor (:mod:`similarity.copy_train`).

From the recipe :func:`similarity.recipe.choose_recipe` made for the same data (counted twice: every step trains
on two copies of each image) it keeps the backbone, the input size, the blocks that train, the learning rate, the
workers and the time budget, and changes what copy detection needs otherwise, after SSCD (Pizzi et al., 2022):

- the ``copies`` objective (InfoNCE on two edited copies of each image + KoLeo at weight 30, temperature 0.05);
- GeM pooling (fixed p = 3) before the projection, a ``COPY_EMBEDDING_DIM`` descriptor, no dropout;
- no activation cache (each step sees two fresh copies of every image);
- flip test-time augmentation for the small CNN, where it costs little: its descriptor is then the same for an image
  and its mirror image, which is a copy; not for the ImageNet backbone, whose cost it would double (local
  verification there checks the mirror image's keypoints);
- the small CNN's width from a probe of the copy step itself (:func:`measure_copy_speed`: two edited copies of
  sampled images, the GeM-pooled descriptor, the copy loss): edits and two views make a copy step several times
  slower than the class probe's, so the class probe's width would leave too few epochs;
- ``COPY_BATCH`` images a step at most (two views each): more images are more negatives for InfoNCE;
- validation on ``COPY_VAL_IMAGES`` held-out images or 20%, whichever is smaller (none under
  ``COPY_VAL_MIN``), each searched for through a seeded copy; early stopping only on ``PATIENCE_MIN_VAL``
  held-out images or more.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from similarity.config import TrainConfig
from similarity.data import LabelledImages
from similarity.recipe import (MIN_WIDE_EPOCHS, PATIENCE, PATIENCE_MIN_VAL, SMALL_CNN_WIDTHS, Recipe,
                               batch_size_for)

COPY_EMBEDDING_DIM = 256
COPY_BATCH = 64
COPY_VAL_IMAGES, COPY_VAL_SHARE, COPY_VAL_MIN = 500, 0.2, 8


def for_copies(recipe: Recipe, *, labelled: bool) -> Recipe:
    """``recipe`` (chosen for the same data) made into the copy objective's recipe, with the reasons."""
    config = recipe.config
    profile = recipe.profile
    n = profile.num_images if profile is not None else 0
    n_val = min(COPY_VAL_IMAGES, int(COPY_VAL_SHARE * n))
    if n_val < COPY_VAL_MIN:
        n_val = 0
    n_train = n - n_val
    batch = batch_size_for(n_train, COPY_BATCH)
    lr = round(config.lr * math.sqrt(batch / config.batch_size), 6)
    pooling = "gem" if config.model.backbone in ("smallcnn", "efficientnet_lite0") else "default"
    model = replace(config.model, pooling=pooling, gem_p=3.0, gem_learnable=False,
                    embedding_dim=COPY_EMBEDDING_DIM, dropout=0.0)
    patience = PATIENCE if n_val >= PATIENCE_MIN_VAL else 0
    copies = replace(config.copies, val_distractors=min(config.copies.val_distractors, max(0, n_train)))
    small_cnn = config.model.backbone == "smallcnn"
    config = replace(config, objective="copies", model=model, copies=copies, batch_size=batch, lr=lr,
                     cache_views=0, augment_flip=True, preprocess=replace(config.preprocess, flip_tta=small_cnn),
                     val_fraction=n_val / n if n else 0.0, patience=patience)
    kept = [reason for reason in recipe.reasons if not reason.startswith(("validation", "no validation",
                                                                          "no class validation", "epoch 0", "batch",
                                                                          "flip test-time", "horizontal flips"))]
    reasons = [
        ("labelled images, trained as copies (labels unused in training, kept for scoring)" if labelled
         else "unlabelled images (a flat folder)") + ": the copy objective, a self-supervised copy descriptor "
        f"(InfoNCE on two edited copies of each image, temperature {config.copies.temperature:g}, + KoLeo entropy "
        f"at weight {config.copies.entropy_weight:g})",
        *kept,
        f"{pooling} pooling" + (" (p = 3, fixed)" if pooling == "gem" else "") +
        f", a {COPY_EMBEDDING_DIM}-d descriptor, no dropout; no activation cache (fresh copies every step); mirror "
        "images are copies: flip augmentation on, " + ("and flip test-time augmentation (an image and its mirror "
                                                       "image get one descriptor)" if small_cnn else
                                                       "no flip test-time augmentation (it would double the cost "
                                                       "of every descriptor)"),
        f"batch {batch} images (x2 views) for {n_train} training images, lr {lr:.2g} (sqrt-scaled)",
        (f"validation: {n_val} held-out images of {n}, each searched for through a seeded copy among them and "
         f"{copies.val_distractors} training images; best epoch by µAP; "
         + (f"early stopping after {PATIENCE} epochs without improvement" if patience
            else f"no early stopping on fewer than {PATIENCE_MIN_VAL}")) if n_val
        else f"no validation: under {COPY_VAL_MIN} images to hold out; the last epoch is kept",
    ]
    return Recipe(config, tuple(reasons), recipe.source, profile)


def measure_copy_speed(data: LabelledImages, config: TrainConfig, steps: int = 3, seed: int = 0) -> float:
    """Images per second of the copy objective's training step on this CPU, each image made into its two edited
    copies: ``steps`` batches of ``config.batch_size`` images drawn from ``data`` (seeded), after one warm-up
    batch: the edits (:class:`similarity.copy_augment.CopyPairs`), forward and backward through ``config``'s model
    and the copy loss, and an optimiser step (about 1.5 s for the width-32 small CNN on 28-px images, 2 cores)."""
    import torch

    from similarity.copies import CopyObjective
    from similarity.copy_augment import CopyPairs, collate_pairs
    from similarity.models import EmbeddingNet
    from similarity.train import build_optimizer

    batch = min(config.batch_size, len(data))
    rows = np.random.default_rng(seed).choice(len(data), (steps + 1) * batch, replace=len(data) < (steps + 1) * batch)
    pairs = CopyPairs(data, config.preprocess, config.augment_strength, flip=config.augment_flip, seed=seed)
    model = EmbeddingNet(config.model, config.preprocess).to(memory_format=torch.channels_last).train()
    objective = CopyObjective.from_config(config.copies)
    optimizer = build_optimizer(model, objective, config)

    def step(chunk: np.ndarray) -> None:
        x, y = collate_pairs([pairs[int(i)] for i in chunk])
        loss = objective(model(x.contiguous(memory_format=torch.channels_last)).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(rows[:batch])
    begin = time.perf_counter()
    for s in range(1, steps + 1):
        step(rows[s * batch:(s + 1) * batch])
    return steps * batch / (time.perf_counter() - begin)


def with_copy_speed(recipe: Recipe, images_per_second: float) -> Recipe:
    """A small-CNN copy recipe's width chosen from ``images_per_second``, the widest copy step's measured speed
    (:func:`measure_copy_speed`): the widest where ``MIN_WIDE_EPOCHS`` epochs fit the budget, else the narrower,
    as the class recipe chooses from its own probe. Other recipes unchanged."""
    config = recipe.config
    if config.model.backbone != "smallcnn" or not config.budget_minutes or recipe.profile is None:
        return recipe
    n_train = recipe.profile.num_images - round(config.val_fraction * recipe.profile.num_images)
    epochs = config.budget_minutes * 60 * images_per_second / max(1, n_train)
    width = SMALL_CNN_WIDTHS[0] if epochs >= MIN_WIDE_EPOCHS else SMALL_CNN_WIDTHS[-1]
    reason = (f"width {width}: the width-{SMALL_CNN_WIDTHS[0]} CNN's copy step (two edited copies of each image) "
              f"trains {images_per_second:.0f} images/s here, {epochs:.1f} epochs in the budget ({MIN_WIDE_EPOCHS} "
              "wanted for that width)")
    reasons = list(recipe.reasons)
    reasons.insert(1, reason)
    return replace(recipe, config=replace(config, model=replace(config.model, width=width)), reasons=tuple(reasons))


__all__ = ["COPY_BATCH", "COPY_EMBEDDING_DIM", "for_copies", "measure_copy_speed", "with_copy_speed"]

"""The copy objective's recipe: the class recipe's backbone, input size, depth and budget, turned into a copy
descriptor (:mod:`similarity.copy_train`).

From the recipe :func:`similarity.recipe.choose_recipe` made for the same data (counted twice: every step trains
on two copies of each image) it keeps the backbone, the input size, the blocks that train, the learning rate, the
workers and the time budget, and changes what copy detection needs otherwise, after SSCD (Pizzi et al., 2022):

- the ``copies`` objective (InfoNCE on two edited copies of each image + KoLeo at weight 30, temperature 0.05);
- GeM pooling (fixed p = 3) before the projection, a ``COPY_EMBEDDING_DIM`` descriptor, no dropout;
- no activation cache (each step sees two fresh copies of every image), no flip test-time augmentation;
- ``COPY_BATCH`` images a step at most (two views each): more images are more negatives for InfoNCE;
- validation on ``COPY_VAL_IMAGES`` held-out images or 20%, whichever is smaller (none under
  ``COPY_VAL_MIN``), each searched for through a seeded copy; early stopping only on ``PATIENCE_MIN_VAL``
  held-out images or more.
"""

from __future__ import annotations

import math
from dataclasses import replace

from similarity.recipe import PATIENCE, PATIENCE_MIN_VAL, Recipe, batch_size_for

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
    config = replace(config, objective="copies", model=model, copies=copies, batch_size=batch, lr=lr,
                     cache_views=0, augment_flip=True, preprocess=replace(config.preprocess, flip_tta=False),
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
        "images are copies (flip augmentation on, no flip test-time augmentation)",
        f"batch {batch} images (x2 views) for {n_train} training images, lr {lr:.2g} (sqrt-scaled)",
        (f"validation: {n_val} held-out images of {n}, each searched for through a seeded copy among them and "
         f"{copies.val_distractors} training images; best epoch by µAP; "
         + (f"early stopping after {PATIENCE} epochs without improvement" if patience
            else f"no early stopping on fewer than {PATIENCE_MIN_VAL}")) if n_val
        else f"no validation: under {COPY_VAL_MIN} images to hold out; the last epoch is kept",
    ]
    return Recipe(config, tuple(reasons), recipe.source, profile)


__all__ = ["COPY_BATCH", "COPY_EMBEDDING_DIM", "for_copies"]

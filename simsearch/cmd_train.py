"""``simsearch train``: train an embedding model on an image collection.

With only ``--data``, the recipe is chosen from the data (:mod:`similarity.recipe`) and the run is fitted to
``--budget-minutes``: a class embedding for labelled data, a copy descriptor (``--objective copies``,
:mod:`similarity.copy_train`) for a flat folder of unlabelled images; ``--preset NAME`` starts from a named example and ``--config FILE`` from a full config
(what ``simsearch tune`` writes as ``best.json``). Explicit flags override single fields of any of them.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields, is_dataclass, replace

from similarity.checkpoint import CHECKPOINT_FILE
from similarity.config import (BACKBONES, LOSSES, OBJECTIVES, POOLINGS, PRECISIONS, SAMPLERS, TrainConfig,
                               default_sampler, read_config, with_overrides)
from similarity.data import LabelledImages, find_fashion_mnist, load_fashion_mnist, load_images
from similarity.embedder import resolve_device
from similarity.models import default_preprocess
from similarity.presets import PRESETS
from similarity.recipe import DEFAULT_BUDGET_MINUTES, Recipe, inspect_data, preprocess_for, recipe_for
from similarity.train import train

log = logging.getLogger(__name__)

EPILOG = ("The chosen recipe is printed before training and saved in the checkpoint. With tensorboard installed "
          "(pip install -r requirements-tune.txt), training also writes OUT/tensorboard/: view it with "
          "`tensorboard --logdir OUT/tensorboard`.")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train an embedding model (metric learning)",
                              description="Train an embedding network. --data is a folder with one sub-folder "
                                          "per class, a CSV of path,label, 'fashion-mnist', or a flat folder of "
                                          "unlabelled images (a copy descriptor). Without --preset or "
                                          "--config the recipe is chosen from the data.", epilog=EPILOG)
    p.add_argument("--data", required=True, help="image folder (class folders, or flat: unlabelled), CSV of "
                                                 "path,label, or 'fashion-mnist'")
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="classes: images of a class are neighbours (needs labels; the default for labelled data); "
                        "copies: a self-supervised copy descriptor, an image's edited copies are its neighbours "
                        "(labels unused; the default for a flat folder)")
    p.add_argument("--entropy-weight", type=float, help="copies: weight of the KoLeo entropy regulariser (30)")
    p.add_argument("--pooling", choices=POOLINGS, help="default (the backbone's own) or gem (generalised mean, p=3)")
    p.add_argument("--out", default="runs/model", help=f"output folder ({CHECKPOINT_FILE}, history.json, curves.png, "
                                                       "tensorboard/)")
    add_base_arguments(p)
    p.add_argument("--budget-minutes", "--max-minutes", dest="budget_minutes", type=float, default=None,
                   help=f"wall-time budget of the run: the epochs and the LR schedule are fitted to it so that it "
                        f"ends annealed (default: the config's, else {DEFAULT_BUDGET_MINUTES:g}; 0: no budget, all "
                        "epochs). --max-minutes is its old name")
    p.add_argument("--fashion-mnist-dir", default=None, help="folder with the four Fashion-MNIST .gz files")
    p.add_argument("--download", action="store_true", help="download Fashion-MNIST if not found (needs internet)")
    p.add_argument("--backbone", choices=BACKBONES)
    p.add_argument("--no-pretrained", action="store_true", help="start the backbone from random weights")
    p.add_argument("--trainable-blocks", type=int, help="-1 all, 0 frozen backbone, N last N blocks")
    p.add_argument("--embedding-dim", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None,
                   help="embed each image and its mirror image (default: on for the small CNN; turn off where a "
                        "mirror image is another class)")
    p.add_argument("--augment-strength", type=float, help="scale of the training augmentation (1.0 default, 0: flips)")
    p.add_argument("--loss", choices=LOSSES)
    p.add_argument("--sampler", choices=SAMPLERS)
    p.add_argument("--positive-fraction", type=float, help="share of positive pairs (pairs sampler)")
    p.add_argument("--m-per-class", type=int, help="images per class in a batch (m_per_class sampler)")
    p.add_argument("--epochs", type=int, help="the most epochs (the time budget may fit fewer)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--test-fraction", type=float)
    p.add_argument("--patience", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="DataLoader workers for image files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def add_base_arguments(p: argparse.ArgumentParser) -> None:
    """Where the config starts from, and the device (``train`` and ``tune`` share these)."""
    base = p.add_mutually_exclusive_group()
    base.add_argument("--preset", choices=sorted(PRESETS), default=None,
                      help="start from a named example recipe instead of one chosen from the data")
    base.add_argument("--config", default=None, metavar="FILE",
                      help="start from a full TrainConfig JSON (e.g. best.json from `simsearch tune`)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="training forward pass: fp32, or bf16 autocast (the recipe picks bf16 for the small CNN "
                        "where the hardware computes it natively)")


def load_training_data(args: argparse.Namespace) -> tuple[LabelledImages, LabelledImages | None]:
    """(training collection, official test collection or None)."""
    if args.data == "fashion-mnist":
        root = find_fashion_mnist(args.fashion_mnist_dir, download_to="data/downloads" if args.download else None)
        return load_fashion_mnist(root, "train"), load_fashion_mnist(root, "test")
    return load_images(args.data), None


def base_recipe(args: argparse.Namespace, data: LabelledImages, budget_minutes: float | None) -> Recipe:
    """The starting point: ``--config`` FILE, ``--preset`` NAME, or the recipe chosen from ``data`` (for
    ``--device``), with the time budget in force set on it: ``budget_minutes``, else the config's, else
    ``DEFAULT_BUDGET_MINUTES``."""
    objective = getattr(args, "objective", None)
    if args.config:
        config = with_overrides(read_config(args.config), objective=objective)
        return Recipe(_with_budget(config, budget_minutes), (f"config from {args.config}",), f"config {args.config}")
    if args.preset:
        config = with_overrides(PRESETS[args.preset](), objective=objective)
        return Recipe(_with_budget(config, budget_minutes), (f"preset {args.preset!r} (a named example)",),
                      f"preset {args.preset}")
    budget = DEFAULT_BUDGET_MINUTES if budget_minutes is None else budget_minutes
    return recipe_for(data, budget, resolve_device(args.device or "auto").type, objective=objective)


def _with_budget(config: TrainConfig, minutes: float | None) -> TrainConfig:
    if minutes is None:
        minutes = config.time_budget_minutes or DEFAULT_BUDGET_MINUTES
    return replace(config, budget_minutes=minutes, max_minutes=0.0)


def build_config(args: argparse.Namespace, data: LabelledImages, recipe: Recipe | None = None) -> TrainConfig:
    """The config to train: ``recipe`` (default: :func:`base_recipe`) with the explicit flags applied."""
    recipe = recipe or base_recipe(args, data, args.budget_minutes)
    config = recipe.config
    model = with_overrides(config.model, backbone=args.backbone, embedding_dim=args.embedding_dim,
                           trainable_blocks=args.trainable_blocks, pooling=getattr(args, "pooling", None))
    if args.no_pretrained:
        model = replace(model, pretrained=False)
    preprocess = config.preprocess
    if model.backbone != config.model.backbone:  # the new backbone's input, for this data
        preprocess = preprocess_for(model, recipe.profile or inspect_data(data), args.image_size)
    elif args.image_size:
        preprocess = (replace(preprocess, image_size=args.image_size, resize=None) if model.backbone == "smallcnn"
                      else replace(default_preprocess(model, args.image_size), flip_tta=preprocess.flip_tta))
    if args.flip_tta is not None:
        preprocess = replace(preprocess, flip_tta=args.flip_tta)
    loss = with_overrides(config.loss, name=args.loss)
    kind = args.sampler
    if kind is None and args.loss is not None:  # a loss chosen on the command line brings its sampler
        kind = default_sampler(args.loss)
    sampler = with_overrides(config.sampler, kind=kind, positive_fraction=args.positive_fraction,
                             m_per_class=args.m_per_class)
    copies = with_overrides(config.copies, entropy_weight=getattr(args, "entropy_weight", None))
    return with_overrides(replace(config, model=model, preprocess=preprocess, loss=loss, sampler=sampler,
                                  copies=copies),
                          epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, patience=args.patience, seed=args.seed,
                          num_workers=args.workers, device=args.device, threads=args.threads,
                          augment_strength=args.augment_strength, precision=args.precision)


def print_recipe(recipe: Recipe, config: TrainConfig) -> None:
    """The recipe as one JSON line (the config actually trained, flags applied), its reasons, and what the
    flags changed (a reason may speak of a value that a flag then replaced)."""
    print("recipe: " + json.dumps(replace(recipe, config=config).summary()))
    for reason in recipe.reasons:
        print(f"  - {reason}")
    for name, chosen, given in changed_by_flags(recipe.config, config):
        print(f"  - set by a flag: {name} {_shown(given)} (the recipe chose {_shown(chosen)})")


def _shown(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def changed_by_flags(chosen: TrainConfig, trained: TrainConfig) -> list[tuple[str, object, object]]:
    """(dotted field name, the recipe's value, the trained value) of every setting that differs."""
    def flat(value: object, prefix: str = "") -> dict[str, object]:
        if is_dataclass(value):
            return {k: v for f in fields(value) for k, v in flat(getattr(value, f.name), prefix + f.name + ".").items()}
        return {prefix[:-1]: value}

    before, after = flat(chosen), flat(trained)
    return [(name, before[name], after[name]) for name in after if before.get(name) != after[name]]


def run(args: argparse.Namespace) -> int:
    data, test = load_training_data(args)
    print(data.summary())
    for item in data.skipped:
        print(f"  skipped {item.reason}")
    recipe = base_recipe(args, data, args.budget_minutes)
    config = build_config(args, data, recipe)
    print_recipe(recipe, config)
    result = train(data, config, args.out, test_data=test, progress=not args.quiet,
                   extra={"recipe": recipe.to_dict()})
    if result.tensorboard_dir:
        print(f"TensorBoard: tensorboard --logdir {result.tensorboard_dir}")
    print(json.dumps({"checkpoint": result.checkpoint_path, "best_epoch": result.best_epoch,
                      "stopped_because": result.stopped_because, "train_seconds": round(result.train_seconds, 1),
                      "wall_seconds": round(result.wall_seconds, 1),
                      "images_per_second": round(result.images_per_second, 1),
                      "tensorboard": result.tensorboard_dir,
                      "val": result.val_metrics, "test": result.test_metrics,
                      "against_start": result.start.to_dict() if result.start else None}, indent=2))
    if result.start is not None:
        print(f"against the start: {result.start.verdict}")
    return 0

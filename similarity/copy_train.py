"""Training a copy descriptor: the copy objective (``TrainConfig.objective == "copies"``) on images without labels.

A Siamese set-up after SSCD (Pizzi et al., 2022): each training image is seen as two edited copies
(:mod:`similarity.copy_augment`), which InfoNCE pulls together while every other image of the batch is pushed
away, with the KoLeo entropy regulariser spreading the descriptors (:class:`similarity.copies.CopyObjective`).
Validation needs no labels: held-out images, seeded copies of them, and how well each copy finds its original
(:class:`similarity.copies.CopyValidation`). The loop is the class trainer's (:func:`similarity.train.train_one_epoch`,
its optimiser, LR schedule, time budget, early stopping in the annealed quarter, checkpoint and curves); only
the batches, the objective and the validation differ. Labels, where the data has them, are not trained on; the
held-out images' class kNN is reported beside the copy scores.

The checkpoint records ``config.objective == "copies"`` (and ``model_info()["objective"]``) and keeps a
background sample of training descriptors (``arrays[BACKGROUND_ARRAY]``) for score normalisation
(:func:`similarity.copies.background_offsets`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from durablefile import atomic_write
from similarity.batches import seed_worker
from similarity.budget import Clock, TimeBudget
from similarity.checkpoint import CHECKPOINT_FILE, load_checkpoint
from similarity.config import TrainConfig
from similarity.copies import CopyObjective, CopyValidation, background_offsets, copy_retrieval_metrics
from similarity.copy_augment import CopyPairs, collate_pairs
from similarity.curves import plot_history
from similarity.data import DatasetError, LabelledImages, stratified_split
from similarity.embedder import Embedder
from similarity.metrics import retrieval_metrics
from similarity.models import EmbeddingNet
from similarity.samplers import ShuffledBatches
from similarity.schedule import refit
from similarity.stopping import BestEpoch, annealing, close_epoch, stop_reason
from similarity.train import (EpochCallback, TrainResult, build_optimizer, build_schedule, has_start,
                              loaded_weights, save_run, start_run, train_one_epoch)
from similarity.workers import worker_context

log = logging.getLogger(__name__)

BACKGROUND_ARRAY = "score_norm_background"  # Checkpoint.arrays key: (n, dim) float32 training-image descriptors
MIN_TRAIN_IMAGES = 4
VAL_METRIC = "val_micro_ap"  # the history column that picks the best epoch


def train_copies(data: LabelledImages, config: TrainConfig, out_dir: str | os.PathLike, *,
                 val_data: LabelledImages | None = None, test_data: LabelledImages | None = None,
                 progress: bool = True, on_epoch: EpochCallback | None = None,
                 extra: Mapping[str, Any] | None = None, clock: Clock = time.perf_counter) -> TrainResult:
    """Train a copy descriptor on ``data`` (labelled or not) and write ``out_dir/model.pt`` (best epoch by
    validation µAP), ``history.json`` and ``curves.png``.

    Without ``val_data``/``test_data`` they are carved from ``data`` by ``config.val_fraction`` /
    ``config.test_fraction`` (seeded; by class where there are labels). With a time budget the epochs and the LR
    schedule are fitted to it (:class:`similarity.budget.TimeBudget`). Arguments as :func:`similarity.train.train`.
    """
    if config.objective != "copies":
        raise ValueError(f"train_copies trains the 'copies' objective, the config asks for {config.objective!r}")
    started = clock()
    out_dir, device = start_run(config, out_dir)
    split = stratified_split(data.labels, val_fraction=0.0 if val_data else config.val_fraction,
                             test_fraction=0.0 if test_data else config.test_fraction, seed=config.seed)
    train_set = data.subset(split["train"])
    if len(train_set) < MIN_TRAIN_IMAGES:
        raise DatasetError(f"the copy objective needs at least {MIN_TRAIN_IMAGES} training images, "
                           f"{data.source or 'the data'} leaves {len(train_set)}")
    val_set = val_data if val_data is not None else (data.subset(split["val"]) if len(split["val"]) else None)
    test_set = test_data if test_data is not None else (data.subset(split["test"]) if len(split["test"]) else None)
    rng = np.random.default_rng(config.seed)
    distractors = _sample(train_set, config.copies.val_distractors, rng)
    validation = _validation(val_set, distractors, config, config.seed) if val_set is not None else None
    log.info("copy objective: training on %d images, validating on %d held-out images and their copies",
             len(train_set), len(val_set) if val_set is not None else 0)

    model = EmbeddingNet(config.model, config.preprocess).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    objective = CopyObjective.from_config(config.copies).to(device)
    pairs = CopyPairs(train_set, config.preprocess, config.augment_strength, flip=config.augment_flip,
                      seed=config.seed)
    batch_sampler = ShuffledBatches(len(train_set), min(config.batch_size, len(train_set)), rng)
    optimizer = build_optimizer(model, objective, config)
    schedule = build_schedule(optimizer, len(batch_sampler), config)
    eval_images = validation.images if validation is not None else 0
    budget = None
    if config.time_budget_minutes:
        background_images = min(config.copies.background_size, len(train_set))
        start_images = eval_images if has_start(config) else 0  # the start scored again at the end
        budget = TimeBudget(config.time_budget_minutes * 60, steps_per_epoch=len(batch_sampler),
                            max_epochs=config.epochs, batch_size=2 * batch_sampler.batch_size,
                            eval_images_per_epoch=eval_images,
                            final_eval_images=2 * eval_images + background_images + start_images,
                            clock=clock, ignore_steps=5 if config.compile else 2, started=started,
                            on_replan=lambda total: refit(schedule, total))
    embedder = Embedder(model, config.preprocess, device=device)
    forward: torch.nn.Module = torch.compile(model) if config.compile else model
    generator = torch.Generator().manual_seed(config.seed)

    checkpoint_path = out_dir / CHECKPOINT_FILE
    notes = dict(extra or {})
    history: list[dict] = []
    best = BestEpoch(config.patience)
    images_seen, train_seconds, early = 0, 0.0, None
    start_state: dict[str, torch.Tensor] | None = None

    def save(**kwargs: Any) -> str:
        return save_run(checkpoint_path, model, config, data, history, split, train_seconds, images_seen, notes,
                        **kwargs)

    if validation is not None and has_start(config):
        model.eval()  # the pretrained start is a candidate, as in class training
        row = {"epoch": 0, "train_loss": None, "lr": 0.0, "seconds": 0.0, "images_per_second": 0.0,
               **_prefixed(validation.score(embedder))}
        history.append(row)
        _log_epoch(row, progress)
        best.update(0, row[VAL_METRIC], annealed=False)
        start_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        save()
    epoch = 0
    while early is None and not (budget.finished if budget else epoch >= config.epochs):
        epoch += 1
        pairs.epoch = epoch
        batches: Any = DataLoader(pairs, batch_sampler=batch_sampler, num_workers=config.num_workers,
                                  collate_fn=collate_pairs, worker_init_fn=seed_worker, generator=generator,
                                  persistent_workers=False, multiprocessing_context=worker_context(config.num_workers))
        if budget is not None:
            batches = budget.steps(batches)
        epoch_start = clock()
        planned = budget.planned_epochs if budget else config.epochs
        stats = train_one_epoch(forward, objective, optimizer, schedule, batches, device, total=len(batch_sampler),
                                desc=f"epoch {epoch}/{planned}", progress=progress, precision=config.precision)
        epoch_seconds = clock() - epoch_start
        train_seconds += epoch_seconds
        images_seen += stats.images // 2
        row = {"epoch": epoch, "train_loss": stats.mean_loss, **objective.epoch_terms(),
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(epoch_seconds, 2),
               "images_per_second": round(images_seen / max(train_seconds, 1e-9), 1)}
        model.eval()
        if validation is not None:
            row.update(_prefixed(validation.score(embedder)))
        score = row.get(VAL_METRIC, float(epoch))  # without validation the last epoch is kept
        history.append(row)
        _log_epoch(row, progress)
        if best.update(epoch, score, annealed=annealing(budget, epoch, config.epochs)):
            save()
        early = close_epoch(row, best, budget, on_epoch)
    stopped_because = stop_reason(early, budget)

    model.load_state_dict(load_checkpoint(checkpoint_path).model.state_dict())
    model.eval()
    background = _background(embedder, train_set, distractors, config, rng)
    metrics: dict[str, Any] = {"best_epoch": best.epoch, "stopped_because": stopped_because,
                               "val": _final_scores(embedder, validation, background, config) if validation else {}}
    if test_set is not None:
        test = _validation(test_set, distractors, config, config.seed + 1)
        metrics["test"] = _final_scores(embedder, test, background, config)
    if start_state is not None and validation is not None:
        metrics["start"] = _against_start(embedder, start_state, validation, metrics["val"], best.epoch, config)
        _report_start(metrics["start"], progress)
    if budget is not None:
        notes["budget"] = budget.summary()
    notes["score_normalisation"] = {"array": BACKGROUND_ARRAY, "images": len(background),
                                    "k": config.copies.score_norm_k, "beta": config.copies.score_norm_beta}
    sha = save(metrics=metrics, arrays={BACKGROUND_ARRAY: background})
    atomic_write(out_dir / "history.json", json.dumps(history, indent=2).encode("utf-8"))
    plot_history([row for row in history if row["epoch"] > 0], out_dir / "curves.png")
    return TrainResult(str(checkpoint_path), sha, history, best.epoch, metrics["val"], metrics.get("test", {}),
                       train_seconds, images_seen / train_seconds if train_seconds else 0.0, stopped_because, split,
                       wall_seconds=clock() - started)


def _sample(data: LabelledImages, n: int, rng: np.random.Generator) -> LabelledImages | None:
    """A seeded sample of up to ``n`` images of ``data`` (None for n = 0)."""
    if n <= 0:
        return None
    return data.subset(np.sort(rng.choice(len(data), min(n, len(data)), replace=False)))


def _validation(originals: LabelledImages, distractors: LabelledImages | None, config: TrainConfig,
                seed: int) -> CopyValidation:
    return CopyValidation.build(originals, distractors, copies_per_image=config.copies.val_copies_per_image,
                                strength=config.augment_strength, flip=config.augment_flip, seed=seed)


def _background(embedder: Embedder, train_set: LabelledImages, distractors: LabelledImages | None,
                config: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """(n, dim) descriptors of a seeded sample of training images that are not validation distractors (so that
    validation can score the normalisation fairly); empty with ``background_size`` 0."""
    taken = set(distractors.ids) if distractors is not None else set()
    free = np.array([i for i, name in enumerate(train_set.ids) if name not in taken], dtype=np.int64)
    if not len(free):  # a tiny set: every training image is a distractor
        free = np.arange(len(train_set))
    n = min(config.copies.background_size, len(free))
    if n == 0:
        return np.zeros((0, config.model.embedding_dim), dtype=np.float32)
    sample = train_set.subset(np.sort(rng.choice(free, n, replace=False)))
    return embedder.embed_data(sample, progress=False).embeddings


def _final_scores(embedder: Embedder, validation: CopyValidation, background: np.ndarray,
                  config: TrainConfig) -> dict[str, float]:
    """The kept model's copy scores, also with background score normalisation, and the held-out images' class
    kNN where they have labels."""
    copies, gallery, copy_of = validation.embed(embedder)
    scores = copy_retrieval_metrics(copies, copy_of, gallery)
    if len(background):
        offsets = background_offsets(copies, background, config.copies.score_norm_k)
        normalised = copy_retrieval_metrics(copies, copy_of, gallery, offsets=offsets, beta=config.copies.score_norm_beta)
        scores.update({f"{name}_normalised": value for name, value in normalised.items() if name != "recall_at_1"})
    originals = validation.originals
    if originals.labelled and len(originals) > 1:
        classes = retrieval_metrics(gallery[:len(originals)], originals.labels, k=config.knn_k)
        scores.update({f"classes_{name}": value for name, value in classes.items()})
    return scores


def _against_start(embedder: Embedder, start_state: dict[str, torch.Tensor], validation: CopyValidation,
                   trained: Mapping[str, float], best_epoch: int, config: TrainConfig) -> dict[str, Any]:
    """The pretrained start's validation scores (copies, and classes where there are labels: what its
    features give off the shelf) beside the kept model's, from the same validation images and copies. Without
    score normalisation on either side: the background sample belongs to the kept weights."""
    if best_epoch == 0:  # the kept model is the start
        start = trained
    else:
        with loaded_weights(embedder.model, start_state):
            start = _final_scores(embedder, validation, np.zeros((0, 1), dtype=np.float32), config)
    keys = [name for name in COMPARED if name in start and name in trained]
    return {"best_epoch": best_epoch, "start": {name: start[name] for name in keys},
            "trained": {name: trained[name] for name in keys}}


COMPARED = ("micro_ap", "recall_at_1", "classes_precision_at_1", "classes_knn_accuracy@10",
            "classes_mean_average_precision_at_r")


def _report_start(comparison: Mapping[str, Any], progress: bool) -> None:
    start, trained = comparison["start"], comparison["trained"]
    shown = {"micro_ap": "copies µAP", "recall_at_1": "copies recall@1", "classes_precision_at_1": "class P@1"}
    parts = [f"{label} {start[name]:.4f} -> {trained[name]:.4f}" for name, label in shown.items() if name in start]
    message = "against the start (pretrained features, validation): " + ", ".join(parts)
    if progress:
        tqdm.write(message)
    log.info(message)


def _prefixed(scores: Mapping[str, float]) -> dict[str, float]:
    return {f"val_{name}": value for name, value in scores.items() if name != "threshold_at_p90"}


def _log_epoch(row: dict, progress: bool) -> None:
    loss = "start (pretrained features)" if row["train_loss"] is None else (
        f"loss {row['train_loss']:.4f} (InfoNCE {row.get('train_info_nce_loss', float('nan')):.4f}, "
        f"KoLeo {row.get('train_koleo_loss', float('nan')):.4f})")
    message = f"epoch {row['epoch']}: {loss}" + (
        f", val copies recall@1 {row['val_recall_at_1']:.4f}, µAP {row['val_micro_ap']:.4f}"
        if "val_micro_ap" in row else "") + f" ({row['seconds']:.0f}s)"
    if progress:
        tqdm.write(message)
    log.info(message)


__all__ = ["BACKGROUND_ARRAY", "train_copies"]

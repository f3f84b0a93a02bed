"""Training an :class:`EmbeddingNet` with a metric-learning objective.

``train(data, config, out_dir)`` splits the data (seeded, stratified), trains with validation every
epoch (precision@1 and kNN accuracy), keeps the best checkpoint, stops early, and writes the
curves as PNG and JSON (and TensorBoard event files when tensorboard is installed). With a time budget
(``config.budget_minutes``) the number of epochs and the LR schedule are fitted to it as training measures its
speed (:mod:`similarity.budget`), so the run ends annealed inside the budget. :func:`train` reads top to
bottom like torchvision's reference scripts: set up, then per epoch :func:`train_one_epoch` and a validation
pass, then :func:`evaluate` on the best weights.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from durablefile import atomic_write
from similarity.batches import decode_into_memory, iterate_batches, make_batch_sampler
from similarity.budget import Clock, TimeBudget
from similarity.cached import (ActivationCache, activation_bytes, build_activation_cache, cached_batches,
                               embed_cached, fit_head, pca_head, view_features)
from similarity.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from similarity.config import TrainConfig
from similarity.curves import plot_history
from similarity.data import LabelledImages, check_labelled, check_min_per_class, stratified_split
from similarity.embedder import EmbedResult, Embedder, resolve_device
from similarity.embedding_cache import EmbeddingCache
from similarity.losses import PairContrastive, ProxyLoss, build_objective
from similarity.gain import StartComparison, compare_to_start
from similarity.metrics import retrieval_metrics, retrieval_summary, score_queries
from similarity.models import EmbeddingNet, StagedForward
from similarity.schedule import build_lr_schedule, refit
from similarity.stopping import BestEpoch, annealing, close_epoch, stop_reason
from similarity.tensorboard_log import TENSORBOARD_DIR, TensorBoardLog, thumbnail_array

log = logging.getLogger(__name__)

PROJECTOR_SAMPLE = 300  # validation images in the TensorBoard embedding projector
CACHE_SHARE = 0.35  # of a time budget, the most that caching activations may take (the epochs need the rest)
CACHE_MAX_BYTES = 2**30  # a larger activation cache is not made (no fitted head for the start then)
EpochCallback = Callable[[dict], None]  # gets each epoch's history row; may raise to abort (e.g. a pruned trial)


@dataclass
class TrainResult:
    checkpoint_path: str
    checkpoint_sha256: str
    history: list[dict]
    best_epoch: int
    val_metrics: dict
    test_metrics: dict
    train_seconds: float
    images_per_second: float
    stopped_because: str
    split: dict[str, np.ndarray] = field(default_factory=dict)
    wall_seconds: float = 0.0  # the whole call, on the clock train() was given
    tensorboard_dir: str | None = None  # where the event files are, when tensorboard is installed
    start: StartComparison | None = None  # the trained model against its starting point (pretrained backbones)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_run(config: TrainConfig, out_dir: str | os.PathLike) -> tuple[Path, torch.device]:
    """What every training run does first: make ``out_dir``, seed every generator, set the thread count; returns
    the output folder and the device the run trains on."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    return out_dir, resolve_device(config.device)


def build_optimizer(model: EmbeddingNet, objective: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = [{"params": model.head_parameters(), "lr": config.lr}]
    backbone = model.backbone_parameters()
    if backbone:
        groups.append({"params": backbone, "lr": config.lr * config.backbone_lr_multiplier})
    if isinstance(objective, ProxyLoss):
        groups.append({"params": list(objective.parameters()), "lr": config.lr * config.loss.proxy_lr_multiplier,
                       "weight_decay": 0.0})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def build_schedule(optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                   config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LR schedule over ``config.epochs``: ``config.warmup_epochs`` of linear warm-up, then cosine
    decay to 1% of the peak at the last step (re-fitted by a time budget, see :func:`similarity.schedule.refit`)."""
    return build_lr_schedule(optimizer, steps_per_epoch * config.epochs, int(steps_per_epoch * config.warmup_epochs))


@dataclass(frozen=True)
class DataSplit:
    """The collections one run trains, validates and tests on, and their ``indices`` into the full data."""

    indices: dict[str, np.ndarray]  # "train" / "val" / "test" -> sorted int arrays (stored in the checkpoint)
    train: LabelledImages
    val: LabelledImages | None
    test: LabelledImages | None


def split_data(data: LabelledImages, config: TrainConfig, *, val_data: LabelledImages | None = None,
               test_data: LabelledImages | None = None) -> DataSplit:
    """Carve val and test sets from ``data`` (seeded, stratified) unless they are given."""
    indices = stratified_split(data.labels, val_fraction=0.0 if val_data else config.val_fraction,
                               test_fraction=0.0 if test_data else config.test_fraction, seed=config.seed)
    val = val_data if val_data is not None else (data.subset(indices["val"]) if len(indices["val"]) else None)
    test = test_data if test_data is not None else (data.subset(indices["test"]) if len(indices["test"]) else None)
    return DataSplit(indices, data.subset(indices["train"]), val, test)


def build_model(config: TrainConfig, num_classes: int,
                device: torch.device) -> tuple[EmbeddingNet, torch.nn.Module]:
    """The embedding network (channels-last on CPU) and its training objective, both on ``device``."""
    model = EmbeddingNet(config.model, config.preprocess).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    objective = build_objective(config.loss, num_classes=num_classes, embedding_dim=config.model.embedding_dim,
                                pair_batches=config.sampler.kind == "pairs").to(device)
    if isinstance(objective, PairContrastive) and config.sampler.kind != "pairs":
        raise ValueError("PairContrastive needs the 'pairs' sampler")
    return model, objective


@dataclass(frozen=True)
class EpochStats:
    mean_loss: float
    batches: int
    images: int


def train_one_epoch(model: torch.nn.Module, objective: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schedule: torch.optim.lr_scheduler.LRScheduler,
                    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device, *,
                    total: int | None = None, desc: str = "", progress: bool = False,
                    precision: str = "fp32") -> EpochStats:
    """One optimiser step per batch of images (B, C, H, W) and labels (B,); the LR schedule steps per batch.
    ``precision="bf16"`` runs the model's forward pass under bfloat16 autocast; the loss is computed in fp32 (a
    normalised-softmax logit is a cosine over a temperature of 0.05: bf16's 3 digits would blur it)."""
    model.train()
    objective.train()
    loss_sum, steps, images = 0.0, 0, 0
    bar = tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress, leave=False)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            embeddings = model(x)
        loss = objective(embeddings.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += float(loss.detach())
        steps += 1
        images += len(y)
        bar.set_postfix(loss=f"{loss_sum / steps:.4f}")
    return EpochStats(loss_sum / max(1, steps), steps, images)


def evaluate(embedder: Embedder, data: LabelledImages, *, k: int, gallery: LabelledImages | None = None,
             progress: bool = False) -> dict[str, float]:
    """precision@1 etc. of ``data`` searched against ``gallery`` (or against itself, leave-one-out)."""
    query = embedder.embed_data(data, progress=progress)
    if gallery is None:
        return _scores(query, data, k)
    return _scores(query, data, k, (embedder.embed_data(gallery, progress=progress), gallery))


def _scores(query: EmbedResult, data: LabelledImages, k: int,
            gallery: tuple[EmbedResult, LabelledImages] | None = None) -> dict[str, float]:
    """:func:`evaluate` of embeddings already computed."""
    q, ql = query.embeddings, data.labels[query.kept]
    if gallery is None:
        return retrieval_metrics(q, ql, k=k)
    ref, images = gallery
    return retrieval_metrics(q, ql, ref.embeddings, images.labels[ref.kept], k=k)


def _final_embeddings(embedder: Embedder, sets: DataSplit, progress: bool) -> dict[str, EmbedResult]:
    """The kept model's embeddings of each part of the split (what the final scores and the cache use)."""
    parts = {"train": sets.train, "val": sets.val, "test": sets.test}
    return {name: embedder.embed_data(part, progress=progress) for name, part in parts.items() if part is not None}


def _cache_embeddings(model_id: str, data: LabelledImages, test_data: LabelledImages | None, sets: DataSplit,
                      final: dict[str, EmbedResult], *, val_given: bool) -> None:
    """Store the final embeddings of ``data`` (its parts put back in order) and of ``test_data`` in the
    embedding cache, so that indexing and reporting with this checkpoint need not embed them again
    (``val_given``: the validation images are not part of ``data``)."""
    cache = EmbeddingCache.from_environment()
    if cache is None:
        return
    rows, chunks = [], []
    for name, result in final.items():
        if (name == "test" and test_data is not None) or (name == "val" and val_given):
            continue
        rows.append(sets.indices[name][result.kept])
        chunks.append(result.embeddings)
    order = np.argsort(np.concatenate(rows), kind="stable")
    kept = np.concatenate(rows)[order]
    cache.save(model_id, data, np.concatenate(chunks)[order], kept)
    if "test" in final:  # the official test set, or the part carved from data (a report's queries)
        test = final["test"]
        cache.save(model_id, test_data if test_data is not None else sets.test, test.embeddings, test.kept,
                   test.skipped)


@dataclass(frozen=True)
class ValScores:
    """One validation pass: precision@1, kNN accuracy, and which queries the kNN vote got right."""

    precision_at_1: float
    knn_accuracy: float
    correct: np.ndarray  # (n_val,) bool


def _quick_val(embedder: Embedder, val: LabelledImages, k: int, cache: ActivationCache | None = None) -> ValScores:
    """Leave-one-out validation of ``val``, embedded from the activation cache when there is one."""
    if cache is not None and cache.val is not None:
        emb = embed_cached(embedder.model, cache.val)
    else:
        emb = embedder.embed_data(val, progress=False).embeddings
    labels = np.asarray(val.labels, dtype=np.int64)
    scores = score_queries(emb, labels, None, None, keep=k)
    # kNN over min(k, n - 1) neighbours: k is lowered when the validation set has k items or fewer
    metrics, predicted = retrieval_summary(scores, labels, labels, k=k, recall_at=(),
                                           num_classes=int(labels.max()) + 1)
    knn = next(value for name, value in metrics.items() if name.startswith("knn_accuracy@"))
    return ValScores(metrics["precision_at_1"], knn, predicted == labels)


def train(data: LabelledImages, config: TrainConfig, out_dir: str | os.PathLike, *,
          val_data: LabelledImages | None = None, test_data: LabelledImages | None = None,
          progress: bool = True, on_epoch: EpochCallback | None = None, extra: Mapping[str, Any] | None = None,
          clock: Clock = time.perf_counter) -> TrainResult:
    """Train on ``data`` and write ``out_dir/model.pt`` (best epoch), ``history.json``, ``curves.png`` and,
    when tensorboard is installed, ``out_dir/tensorboard/``.

    Without ``val_data``/``test_data`` they are carved from ``data`` by ``config.val_fraction`` /
    ``config.test_fraction`` (stratified, seeded); the split is stored in the checkpoint. With a time budget
    (``config.time_budget_minutes``) ``config.epochs`` is the most epochs; the budget fits the rest.
    ``on_epoch`` gets each epoch's history row; ``extra`` is stored in the checkpoint's ``extra`` (e.g. the
    recipe that chose ``config``); ``clock`` (seconds) times everything, budget included. A config whose
    ``objective`` is "copies" trains a copy descriptor instead (:func:`similarity.copy_train.train_copies`), on
    labelled or unlabelled data; the class objective needs labels.
    """
    if config.objective == "copies":
        from similarity.copy_train import train_copies  # it builds on this module

        return train_copies(data, config, out_dir, val_data=val_data, test_data=test_data, progress=progress,
                            on_epoch=on_epoch, extra=extra, clock=clock)
    check_labelled(data)
    started = clock()
    out_dir, device = start_run(config, out_dir)
    check_min_per_class(data, 2)
    sets = split_data(data, config, val_data=val_data, test_data=test_data)
    sets = replace(sets, train=decode_into_memory(sets.train, config.preprocess, progress=progress))
    log.info("training on %d images, validating on %d", len(sets.train), len(sets.val) if sets.val else 0)

    model, objective = build_model(config, len(data.class_names), device)
    notes = dict(extra or {})
    cache = None
    cache_bytes = (_cache_bytes(model, config, sets) if config.cache_views and model.frozen_stages is not None
                   else None)
    if cache_bytes is not None and cache_bytes <= CACHE_MAX_BYTES and device.type == "cpu":
        minutes = config.time_budget_minutes
        deadline = (lambda: CACHE_SHARE * minutes * 60 - (clock() - started)) if minutes else None
        cache = build_activation_cache(model, sets.train, sets.val, config, deadline=deadline, progress=progress)
        notes["activation_cache"] = {"views": cache.views, "megabytes": round(cache.bytes / 1e6, 1),
                                     "seconds": round(cache.seconds, 1), "frozen_stages": model.frozen_stages,
                                     "head_fit": _start_head(model, objective, cache, sets, config)}
    elif config.cache_views:
        log.info("no activation cache, so no fitted head for the start: %s",
                 f"{config.model.backbone} does not run in stages" if cache_bytes is None else
                 f"{cache_bytes / 2**30:.1f} GiB is over {CACHE_MAX_BYTES / 2**30:g} GiB" if cache_bytes > CACHE_MAX_BYTES
                 else "it runs on the CPU only")
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    batch_sampler = make_batch_sampler(sets.train.labels, config, rng)
    optimizer = build_optimizer(model, objective, config)
    schedule = build_schedule(optimizer, len(batch_sampler), config)
    budget = _time_budget(config, sets, len(batch_sampler), clock, started,
                          on_replan=lambda total: refit(schedule, total))
    embedder = Embedder(model, config.preprocess, device=device)
    # compiled for training only: evaluation runs the plain module, which shares the same weights
    # with several cached views the epochs run from the cache; with the plain view alone (head fit and validation)
    # they run live, fresh augmentation each epoch, through frozen blocks that need no backward pass
    cached_epochs = cache is not None and cache.views >= 2
    forward: torch.nn.Module = StagedForward(model) if cached_epochs else model
    forward = torch.compile(forward) if config.compile else forward
    board = TensorBoardLog.open(out_dir / TENSORBOARD_DIR)

    checkpoint_path = out_dir / CHECKPOINT_FILE
    history: list[dict] = []
    best = BestEpoch(config.patience)
    images_seen, train_seconds, early = 0, 0.0, None
    start: _Start | None = None
    best_correct: np.ndarray | None = None
    try:
        if sets.val is not None and has_start(config):
            # the starting point is a candidate: pretrained features (with the fitted head, if any) as epoch 0
            model.eval()
            val = _quick_val(embedder, sets.val, config.knn_k, cache)
            start = _Start(val, {k: v.detach().clone() for k, v in model.state_dict().items()})
            row = {"epoch": 0, "train_loss": None, "lr": 0.0, "seconds": 0.0, "images_per_second": 0.0,
                   "val_precision_at_1": val.precision_at_1, "val_knn_accuracy": val.knn_accuracy}
            history.append(row)
            _log_epoch(row, 0.0, progress)
            best.update(0, val.knn_accuracy, annealed=False)
            best_correct = val.correct
            save_run(checkpoint_path, model, config, data, history, sets.indices, train_seconds, images_seen, notes)
        epoch = 0
        while early is None and not (budget.finished if budget else epoch >= config.epochs):
            epoch += 1
            planned = budget.planned_epochs if budget else config.epochs
            batches = (cached_batches(cache, sets.train.labels, batch_sampler, rng) if cached_epochs
                       else iterate_batches(sets.train, batch_sampler, config, generator))
            if budget is not None:  # times the steps and ends the epoch where the plan ends
                batches = budget.steps(batches)
            epoch_start = clock()
            stats = train_one_epoch(forward, objective, optimizer, schedule, batches, device, total=len(batch_sampler),
                                    desc=f"epoch {epoch}/{planned}", progress=progress, precision=config.precision)
            epoch_seconds = clock() - epoch_start
            train_seconds += epoch_seconds
            images_seen += stats.images
            row = {"epoch": epoch, "train_loss": stats.mean_loss, "lr": optimizer.param_groups[0]["lr"],
                   "seconds": round(epoch_seconds, 2),
                   "images_per_second": round(stats.batches and images_seen / max(train_seconds, 1e-9), 1)}
            model.eval()
            correct = None
            if sets.val is not None:
                val = _quick_val(embedder, sets.val, config.knn_k, cache)
                row.update({"val_precision_at_1": val.precision_at_1, "val_knn_accuracy": val.knn_accuracy})
                score, correct = val.knn_accuracy, val.correct
            else:  # fixed schedule: the last epoch is the one kept
                score = float(epoch)
            history.append(row)
            _log_epoch(row, epoch_seconds, progress)
            board.log_epoch(row)
            if best.update(epoch, score, annealed=annealing(budget, epoch, config.epochs)):
                best_correct = correct
                save_run(checkpoint_path, model, config, data, history, sets.indices, train_seconds, images_seen, notes)
            early = close_epoch(row, best, budget, on_epoch)
        stopped_because = stop_reason(early, budget)

        # the best epoch's weights are what the checkpoint holds; re-save with the full history
        best_epoch = best.epoch
        model.load_state_dict(load_checkpoint(checkpoint_path).model.state_dict())
        model.eval()
        final = _final_embeddings(embedder, sets, progress)
        val_metrics = _scores(final["val"], sets.val, config.knn_k) if sets.val is not None else {}
        test_metrics = (_scores(final["test"], sets.test, config.knn_k, (final["train"], sets.train))
                        if sets.test is not None else {})
        comparison = None
        if start is not None and best_correct is not None:
            start_test = {}
            if sets.test is not None and best_epoch != 0:
                start_test = _evaluate_state(embedder, start.state, sets.test, sets.train, config.knn_k)
            comparison = compare_to_start(start.val.correct, best_correct, start_test=start_test,
                                          trained_test=test_metrics, best_epoch=best_epoch)
            _report_start(comparison, progress)
        if board.enabled:
            _log_projector(board, embedder, sets.val if sets.val is not None else sets.train, best_epoch, config.seed)
    finally:
        board.close()
    images_per_second = images_seen / train_seconds if train_seconds else 0.0
    if budget is not None:
        notes["budget"] = budget.summary()
    metrics = {"val": val_metrics, "test": test_metrics, "best_epoch": best_epoch, "stopped_because": stopped_because}
    if comparison is not None:
        metrics["start"] = comparison.to_dict()
    sha = save_run(checkpoint_path, model, config, data, history, sets.indices, train_seconds, images_seen, notes,
                metrics=metrics)
    _cache_embeddings(sha, data, test_data, sets, final, val_given=val_data is not None)
    atomic_write(out_dir / "history.json", json.dumps(history, indent=2).encode("utf-8"))
    plot_history([row for row in history if row["epoch"] > 0], out_dir / "curves.png")
    return TrainResult(str(checkpoint_path), sha, history, best_epoch, val_metrics, test_metrics, train_seconds,
                       images_per_second, stopped_because, sets.indices, wall_seconds=clock() - started,
                       tensorboard_dir=board.log_dir, start=comparison)


@dataclass(frozen=True)
class _Start:
    val: ValScores
    state: dict[str, torch.Tensor]


def _start_head(model: EmbeddingNet, objective: torch.nn.Module, cache: ActivationCache, sets: DataSplit,
                config: TrainConfig) -> dict[str, Any]:
    """The head the start and fine-tuning begin from: the frozen features' principal directions (what a kNN on
    the frozen features sees), or a linear probe fitted from there with the training loss, whichever validates
    better (the PCA head without a validation split)."""
    features = view_features(model, cache)
    pca_head(model, objective, features, sets.train.labels)
    if sets.val is None:
        return {"chosen": "pca"}
    embedder = Embedder(model, config.preprocess)
    pca_score = _quick_val(embedder, sets.val, config.knn_k, cache).knn_accuracy
    pca_state = {k: v.detach().clone() for k, v in [*model.head.state_dict().items(),
                                                     *(("objective." + n, p) for n, p in objective.state_dict().items())]}
    fitted = fit_head(model, objective, features, sets.train.labels, config)
    probe_score = _quick_val(embedder, sets.val, config.knn_k, cache).knn_accuracy
    chosen = "probe" if probe_score > pca_score else "pca"
    if chosen == "pca":
        model.head.load_state_dict({k: v for k, v in pca_state.items() if not k.startswith("objective.")})
        objective.load_state_dict({k[len("objective."):]: v for k, v in pca_state.items() if k.startswith("objective.")})
    log.info("start head: %s (validation kNN: pca %.4f, linear probe %.4f)", chosen, pca_score, probe_score)
    return {"chosen": chosen, "pca_val_knn": pca_score, "probe_val_knn": probe_score, "probe": fitted}


def _cache_bytes(model: EmbeddingNet, config: TrainConfig, sets: DataSplit) -> int:
    n_val = len(sets.val) if sets.val is not None else 0
    return (config.cache_views * len(sets.train) + n_val) * activation_bytes(model, config.preprocess.image_size)


def has_start(config: TrainConfig) -> bool:
    """Whether the model starts from something worth keeping (pretrained features), so that epoch 0 is scored."""
    return config.model.backbone != "smallcnn" and config.model.pretrained


def _evaluate_state(embedder: Embedder, state: dict[str, torch.Tensor], queries: LabelledImages,
                    gallery: LabelledImages, k: int) -> dict[str, float]:
    """:func:`evaluate` with the weights ``state`` loaded for the call, the model's own weights restored after."""
    with loaded_weights(embedder.model, state):
        return evaluate(embedder, queries, k=k, gallery=gallery)


@contextmanager
def loaded_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """``model`` with the weights ``state`` for the ``with`` block; its own weights are restored after."""
    current = {key: value.detach().clone() for key, value in model.state_dict().items()}
    model.load_state_dict(state)
    try:
        yield
    finally:
        model.load_state_dict(current)


def _report_start(comparison: StartComparison, progress: bool) -> None:
    message = f"against the start: {comparison.verdict}"
    if progress:
        tqdm.write(message)
    log.info(message)


def _time_budget(config: TrainConfig, sets: DataSplit, steps_per_epoch: int, clock: Clock, started: float,
                 on_replan: Callable[[int], None]) -> TimeBudget | None:
    """The run's :class:`TimeBudget`, counted from ``started`` (set-up included), or None without one."""
    minutes = config.time_budget_minutes
    if not minutes:
        return None
    n_val = len(sets.val) if sets.val is not None else 0
    # test queries + train gallery, twice with a starting point to compare against
    n_test = (len(sets.test) + len(sets.train)) * (2 if has_start(config) else 1) if sets.test is not None else 0
    return TimeBudget(minutes * 60, steps_per_epoch=steps_per_epoch, max_epochs=config.epochs,
                        batch_size=config.batch_size, eval_images_per_epoch=n_val,
                        final_eval_images=n_val + n_test + PROJECTOR_SAMPLE, clock=clock,
                        ignore_steps=5 if config.compile else 2, started=started, on_replan=on_replan)


def _log_projector(board: TensorBoardLog, embedder: Embedder, data: LabelledImages, step: int, seed: int) -> None:
    """A seeded sample of ``data`` in TensorBoard's embedding projector, with class names and thumbnails."""
    rng = np.random.default_rng(seed)
    sample = data.subset(np.sort(rng.choice(len(data), min(PROJECTOR_SAMPLE, len(data)), replace=False)))
    result = embedder.embed_data(sample, progress=False)
    labels = [sample.class_names[sample.labels[i]] for i in result.kept]
    board.log_embeddings(result.embeddings, labels, thumbnail_array([sample.load(int(i)) for i in result.kept]), step)


def _log_epoch(row: dict, epoch_seconds: float, progress: bool) -> None:
    loss = "start (pretrained features, no fine-tuning)" if row["train_loss"] is None else f"loss {row['train_loss']:.4f}"
    message = (f"epoch {row['epoch']}: {loss}"
               + (f", val p@1 {row['val_precision_at_1']:.4f}, val kNN {row['val_knn_accuracy']:.4f}"
                  if "val_knn_accuracy" in row else "") + f" ({epoch_seconds:.0f}s)")
    if progress:
        tqdm.write(message)
    log.info(message)


def save_run(path: Path, model: EmbeddingNet, config: TrainConfig, data: LabelledImages, history: list[dict],
             split: dict[str, np.ndarray], train_seconds: float, images_seen: int, notes: Mapping[str, Any],
             metrics: dict | None = None, arrays: dict[str, np.ndarray] | None = None) -> str:
    """Save a run's checkpoint: the weights, ``config``, the history, ``metrics`` and ``arrays``, and in ``extra``
    the ``notes``, the data's source and size, the split and the time trained; returns its sha256."""
    extra = {
        **notes,
        "data_source": data.source,
        "num_images": len(data),
        "split_seed": config.seed,
        "split": {name: idx.astype(int).tolist() for name, idx in split.items()},
        "train_seconds": round(train_seconds, 2),
        "images_seen": images_seen,
    }
    return save_checkpoint(path, model, config, data.class_names, history=history, metrics=metrics, extra=extra,
                           arrays=arrays)


__all__ = ["DataSplit", "EpochCallback", "EpochStats", "TrainResult", "build_model", "build_optimizer", "build_schedule",
           "evaluate", "has_start", "loaded_weights", "save_run", "seed_everything", "split_data", "start_run", "train",
           "train_one_epoch"]

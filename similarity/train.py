"""Training an :class:`EmbeddingNet` with a metric-learning objective.

``train(data, config, out_dir)`` splits the data (seeded, stratified), trains with validation every
epoch (precision@1 and kNN accuracy), keeps the best checkpoint, stops early, and writes the
curves as PNG and JSON. The whole loop reads top to bottom in :func:`train`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from similarity.checkpoint import save_checkpoint
from similarity.config import TrainConfig
from similarity.curves import plot_history
from similarity.data import LabelledImages, check_min_per_class, stratified_split
from similarity.embedder import Embedder, resolve_device
from similarity.losses import PairContrastive, ProxyLoss, build_objective
from similarity.metrics import retrieval_metrics
from similarity.models import EmbeddingNet
from similarity.samplers import ClassBalancedSampler, PairSampler, ShuffledBatches
from similarity.transforms import BatchAugment, pixels_to_tensor, supports_fast_path, train_transform

log = logging.getLogger(__name__)


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _TrainDataset(Dataset):
    def __init__(self, data: LabelledImages, transform):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.transform(self.data.load(i)), int(self.data.labels[i])


def make_batch_sampler(labels: np.ndarray, config: TrainConfig, rng: np.random.Generator):
    sampler = config.sampler
    if sampler.kind == "pairs":
        return PairSampler(labels, config.batch_size // 2, sampler.positive_fraction, rng)
    if sampler.kind == "m_per_class":
        return ClassBalancedSampler(labels, sampler.m_per_class, config.batch_size, rng)
    return ShuffledBatches(len(labels), config.batch_size, rng)


def iterate_batches(data: LabelledImages, batch_sampler, config: TrainConfig,
                    generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield augmented (images, labels) batches. In-memory grayscale data stays in torch (fast path);
    file-backed data is decoded and augmented per image in DataLoader workers."""
    spec = config.preprocess
    if supports_fast_path(data.pixels, spec):
        augment = BatchAugment(generator=generator) if config.augment else None
        labels = torch.from_numpy(data.labels)
        for batch in batch_sampler:
            x = pixels_to_tensor(data.pixels[batch], spec)
            yield (augment(x) if augment else x), labels[batch]
        return
    loader = DataLoader(_TrainDataset(data, train_transform(spec, config.augment)), batch_sampler=batch_sampler,
                        num_workers=config.num_workers, persistent_workers=False,
                        worker_init_fn=_seed_worker, generator=generator)
    yield from loader


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_optimizer(model: EmbeddingNet, objective: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = [{"params": model.head_parameters(), "lr": config.lr}]
    backbone = model.backbone_parameters()
    if backbone:
        groups.append({"params": backbone, "lr": config.lr * config.backbone_lr_multiplier})
    if isinstance(objective, ProxyLoss):
        groups.append({"params": list(objective.parameters()), "lr": config.lr * config.loss.proxy_lr_multiplier,
                       "weight_decay": 0.0})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up, then cosine decay to 1% of the peak."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def evaluate(embedder: Embedder, data: LabelledImages, *, k: int, gallery: LabelledImages | None = None,
             progress: bool = False) -> dict[str, float]:
    """precision@1 etc. of ``data`` searched against ``gallery`` (or against itself, leave-one-out)."""
    query = embedder.embed_data(data, progress=progress)
    q, ql = query.embeddings, data.labels[query.kept]
    if gallery is None:
        return retrieval_metrics(q, ql, k=k)
    ref = embedder.embed_data(gallery, progress=progress)
    return retrieval_metrics(q, ql, ref.embeddings, gallery.labels[ref.kept], k=k)


def _quick_val(embedder: Embedder, val: LabelledImages, k: int) -> dict[str, float]:
    emb = embedder.embed_data(val, progress=False).embeddings
    metrics = retrieval_metrics(emb, val.labels, k=k, include=("precision_at_1",))
    return {"precision_at_1": metrics["precision_at_1"], "knn_accuracy": metrics[f"knn_accuracy@{k}"]}


def train(data: LabelledImages, config: TrainConfig, out_dir: str | os.PathLike, *,
          val_data: LabelledImages | None = None, test_data: LabelledImages | None = None,
          progress: bool = True) -> TrainResult:
    """Train on ``data`` and write ``out_dir/model.pt`` (best epoch), ``history.json``, ``curves.png``.

    Without ``val_data``/``test_data`` they are carved from ``data`` by ``config.val_fraction`` /
    ``config.test_fraction`` (stratified, seeded); the split is stored in the checkpoint.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    check_min_per_class(data, 2)

    split = stratified_split(data.labels, val_fraction=0.0 if val_data else config.val_fraction,
                             test_fraction=0.0 if test_data else config.test_fraction, seed=config.seed)
    train_set = data.subset(split["train"])
    val_set = val_data if val_data is not None else (data.subset(split["val"]) if len(split["val"]) else None)
    test_set = test_data if test_data is not None else (data.subset(split["test"]) if len(split["test"]) else None)
    log.info("training on %d images, validating on %d", len(train_set), len(val_set) if val_set else 0)

    model = EmbeddingNet(config.model, config.preprocess).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    objective = build_objective(config.loss, num_classes=len(data.class_names),
                                embedding_dim=config.model.embedding_dim,
                                pair_batches=config.sampler.kind == "pairs").to(device)
    if isinstance(objective, PairContrastive) and config.sampler.kind != "pairs":
        raise ValueError("PairContrastive needs the 'pairs' sampler")
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    batch_sampler = make_batch_sampler(train_set.labels, config, rng)
    steps_per_epoch = len(batch_sampler)
    optimizer = build_optimizer(model, objective, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * config.epochs, int(steps_per_epoch * config.warmup_epochs)))
    embedder = Embedder(model, config.preprocess, device=device)
    # compiled for training only: evaluation runs the plain module, which shares the same weights
    forward = torch.compile(model) if config.compile else model

    history: list[dict] = []
    best_score, best_epoch, stale = -1.0, 0, 0
    checkpoint_path = out_dir / "model.pt"
    sha = ""
    images_seen, train_seconds, stopped_because = 0, 0.0, "finished all epochs"
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        objective.train()
        epoch_start, loss_sum, batches = time.perf_counter(), 0.0, 0
        bar = tqdm(iterate_batches(train_set, batch_sampler, config, generator), total=steps_per_epoch,
                   desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not progress, leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            loss = objective(forward(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach())
            batches += 1
            images_seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / batches:.4f}")
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        row = {"epoch": epoch, "train_loss": loss_sum / max(1, batches), "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(epoch_seconds, 2), "images_per_second": round(batches and images_seen / train_seconds, 1)}
        model.eval()
        if val_set is not None:
            val = _quick_val(embedder, val_set, config.knn_k)
            row.update({"val_precision_at_1": val["precision_at_1"], "val_knn_accuracy": val["knn_accuracy"]})
            score = val["knn_accuracy"]
        else:  # fixed schedule: the last epoch is the one kept
            score = float(epoch)
        history.append(row)
        message = (f"epoch {epoch}: loss {row['train_loss']:.4f}"
                   + (f", val p@1 {row['val_precision_at_1']:.4f}, val kNN {row['val_knn_accuracy']:.4f}"
                      if val_set is not None else "") + f" ({epoch_seconds:.0f}s)")
        if progress:
            tqdm.write(message)
        log.info(message)
        if score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            sha = _save(checkpoint_path, model, config, data, history, split, train_seconds, images_seen)
        else:
            stale += 1
        if config.patience and stale >= config.patience:
            stopped_because = f"early stop: no val improvement for {stale} epochs"
            break
        if config.max_minutes and (time.perf_counter() - started) / 60 > config.max_minutes:
            stopped_because = f"time limit of {config.max_minutes} minutes reached"
            break

    # the best epoch's weights are what the checkpoint holds; re-save with the full history
    from similarity.checkpoint import load_checkpoint

    best = load_checkpoint(checkpoint_path)
    model.load_state_dict(best.model.state_dict())
    model.eval()
    val_metrics = evaluate(embedder, val_set, k=config.knn_k) if val_set is not None else {}
    test_metrics = evaluate(embedder, test_set, k=config.knn_k, gallery=train_set) if test_set is not None else {}
    images_per_second = images_seen / train_seconds if train_seconds else 0.0
    sha = _save(checkpoint_path, model, config, data, history, split, train_seconds, images_seen,
                metrics={"val": val_metrics, "test": test_metrics, "best_epoch": best_epoch,
                         "stopped_because": stopped_because})
    (out_dir / "history.json").write_text(json.dumps(history, indent=2))
    plot_history(history, out_dir / "curves.png")
    return TrainResult(str(checkpoint_path), sha, history, best_epoch, val_metrics, test_metrics, train_seconds,
                       images_per_second, stopped_because, split)


def _save(path: Path, model: EmbeddingNet, config: TrainConfig, data: LabelledImages, history: list[dict],
          split: dict[str, np.ndarray], train_seconds: float, images_seen: int, metrics: dict | None = None) -> str:
    extra = {
        "data_source": data.source,
        "num_images": len(data),
        "split_seed": config.seed,
        "split": {name: idx.astype(int).tolist() for name, idx in split.items()},
        "train_seconds": round(train_seconds, 2),
        "images_seen": images_seen,
    }
    return save_checkpoint(path, model, config, data.class_names, history=history, metrics=metrics, extra=extra)


__all__ = ["TrainResult", "train", "evaluate", "seed_everything"]

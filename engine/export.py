"""Exporting a checkpoint for ONNX Runtime (``simsearch export``): where the int8 calibration images come from,
where the file goes, and a check of the exported model against torch on those images."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from similarity.checkpoint import Checkpoint, load_checkpoint
from similarity.data import DatasetError, LabelledImages, load_fashion_mnist, load_labelled_images
from similarity.onnx_export import calibration_inputs, export_onnx
from similarity.onnx_format import DEFAULT_CALIBRATION_SIZE, ONNX_SUFFIX
from similarity.onnx_runtime import OnnxEmbedder
from similarity.runtime import onnx_cache_path

FASHION_MNIST = "fashion-mnist"
CHECK_IMAGES = 64  # calibration images embedded by both runtimes after an int8 export


@dataclass(frozen=True)
class ExportSummary:
    path: str
    checkpoint_sha256: str
    int8: bool
    flip_tta_folded: bool
    bytes: int
    calibration: str = ""
    min_cosine_to_torch: float | None = None  # int8: worst cosine between the two runtimes' embeddings

    def to_dict(self) -> dict:
        return asdict(self)


def default_export_path(checkpoint: Checkpoint, int8: bool) -> Path:
    """Beside the checkpoint: ``model.onnx`` (the cache :func:`similarity.runtime.load_embedder` uses) for fp32,
    ``model.int8.onnx`` for int8."""
    path = onnx_cache_path(checkpoint)
    return path.with_suffix(".int8" + ONNX_SUFFIX) if int8 else path


def export_checkpoint(checkpoint_path: str | os.PathLike, out: str | os.PathLike | None = None, *, int8: bool = False,
                      calibration: str | None = None, calibration_size: int = DEFAULT_CALIBRATION_SIZE,
                      seed: int = 0) -> ExportSummary:
    """Export ``checkpoint_path`` to ONNX at ``out`` (default :func:`default_export_path`).  int8 calibrates on
    ``calibration`` (a folder of class folders, a CSV of path,label, or ``fashion-mnist``), by default on the
    training data the checkpoint records."""
    if calibration is not None and not int8:
        raise ValueError("calibration data is for int8 exports only (add --int8)")
    if calibration_size < 1:
        raise ValueError(f"the calibration size must be >= 1, got {calibration_size}")
    ckpt = load_checkpoint(checkpoint_path)
    target = Path(out) if out else default_export_path(ckpt, int8)
    if target.suffix != ONNX_SUFFIX:
        raise ValueError(f"the output file must end in {ONNX_SUFFIX}, got {target}")
    data = calibration_images(ckpt, calibration) if int8 else None
    path = export_onnx(ckpt, target, int8=int8, calibration=data, calibration_size=calibration_size, seed=seed)
    embedder = OnnxEmbedder(path, threads=1)
    worst = None
    if data is not None:
        inputs, _ = calibration_inputs(data, ckpt.preprocess, size=CHECK_IMAGES, seed=seed + 1)
        worst = _min_cosine(ckpt, embedder, inputs)
    info = embedder.info
    return ExportSummary(str(path), info.checkpoint_sha256, info.int8, info.flip_tta_folded, path.stat().st_size,
                         info.calibration, worst)


def calibration_images(checkpoint: Checkpoint, source: str | None = None) -> LabelledImages:
    """The images an int8 export calibrates on: ``source`` (a folder, a CSV or ``fashion-mnist``), else the
    training split of the data the checkpoint was trained on, if it can still be loaded."""
    if source is not None:
        return _load(source)
    recorded = checkpoint.extra.get("data_source", "")
    if not recorded:
        raise ValueError("the checkpoint does not record its training data: pass --calibration-data")
    try:
        data = _load(recorded)
    except (DatasetError, OSError) as exc:
        raise ValueError(f"the checkpoint's training data {recorded!r} cannot be loaded ({exc}): pass "
                         "--calibration-data") from None
    train = checkpoint.extra.get("split", {}).get("train")
    if train and checkpoint.extra.get("num_images") == len(data):  # the same collection: its training split
        data = data.subset(np.asarray(train))
    return data


def _load(source: str) -> LabelledImages:
    if source == FASHION_MNIST or source.startswith(FASHION_MNIST + ":"):
        return load_fashion_mnist(None, source.partition(":")[2] or "train")
    return load_labelled_images(source, min_per_class=1)


def _min_cosine(checkpoint: Checkpoint, embedder: OnnxEmbedder, inputs: np.ndarray) -> float:
    import torch

    x = torch.from_numpy(inputs)
    reference = checkpoint.embedder().embed_tensor(x)
    return float(np.min(np.sum(reference * embedder.embed_tensor(x), axis=1)))

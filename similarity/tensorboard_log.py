"""TensorBoard event files for a training run, when the ``tensorboard`` package is installed.

Training writes ``OUT/tensorboard/``: each epoch's scalars (train loss, validation metrics, learning rate,
speed) and, at the end, an embedding-projector sample (a few hundred validation embeddings with their class
names and thumbnails). Look at them with::

    tensorboard --logdir OUT/tensorboard        # then open http://localhost:6006

Without ``tensorboard`` (it is an extra: ``requirements-tune.txt``), :meth:`TensorBoardLog.open` returns a
log that writes nothing, and training runs as before.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from similarity.imageio import scale_to_fit

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"  # beside model.pt and curves.png
# history-row keys and the TensorBoard tag each is written under; other numeric keys go under "other/"
_TAGS = {"train_loss": "loss/train", "lr": "lr", "seconds": "time/epoch_seconds",
         "images_per_second": "time/images_per_second"}


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a history-row key: ``val_knn_accuracy`` -> ``val/knn_accuracy``."""
    if key in _TAGS:
        return _TAGS[key]
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    return f"other/{key}"


class TensorBoardLog:
    """A ``SummaryWriter`` for one run, or nothing (``writer`` None) when tensorboard is not installed."""

    def __init__(self, writer: Any | None) -> None:
        self.writer = writer

    @classmethod
    def open(cls, log_dir: str | os.PathLike) -> TensorBoardLog:
        """A writer into ``log_dir``, emptied first: a run replaces the event files of an earlier run in the same
        output folder, as it replaces its checkpoint (mixed runs would draw as one zig-zag curve)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: no event files (pip install -r requirements-tune.txt)")
            return cls(None)
        log_dir = Path(log_dir)
        if log_dir.is_dir():
            shutil.rmtree(log_dir)
        return cls(SummaryWriter(log_dir=str(log_dir)))

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    @property
    def log_dir(self) -> str | None:
        return self.writer.log_dir if self.writer is not None else None

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """One history row (``{"epoch": 3, "train_loss": ..., "val_knn_accuracy": ..., "lr": ...}``)."""
        if self.writer is None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key), float(value), step)
        self.writer.flush()

    def log_embeddings(self, embeddings: np.ndarray, labels: Sequence[str], thumbnails: np.ndarray | None,
                       step: int, tag: str = "validation") -> None:
        """embeddings: (n, d) float32; labels: n class names; thumbnails: (n, 3, h, w) float32 in [0, 1]."""
        if self.writer is None or len(embeddings) == 0:
            return
        import torch

        label_img = torch.from_numpy(thumbnails) if thumbnails is not None else None
        self.writer.add_embedding(torch.from_numpy(np.asarray(embeddings, dtype=np.float32)),
                                  metadata=[str(label) for label in labels], label_img=label_img,
                                  global_step=step, tag=tag)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def thumbnail_array(images: Sequence[Image.Image], size: int = 32) -> np.ndarray:
    """Images -> (n, 3, size, size) float32 in [0, 1]: each scaled to fit (:func:`scale_to_fit`) and centred
    on white, as the projector's sprite sheet needs one size for all."""
    out = np.ones((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        small = scale_to_fit(image.convert("RGB"), size)
        w, h = small.size
        top, left = (size - h) // 2, (size - w) // 2
        out[i, :, top:top + h, left:left + w] = np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return out


def event_files(log_dir: str | os.PathLike) -> list[Path]:
    """The event files under ``log_dir`` (TensorBoard names them ``events.out.tfevents.*``)."""
    return sorted(Path(log_dir).rglob("events.out.tfevents.*"))

"""Checkpoints: weights + full config + class names + preprocessing + versions, in one file.

Loading one rebuilds the exact embedder that training evaluated. Files are written atomically and
read with ``torch.load(weights_only=True)``, so a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from durablefile import atomic_write, file_sha256

from similarity.config import PreprocessSpec, TrainConfig, from_dict
from similarity.models import EmbeddingNet
from similarity.version import simsearch_version

FORMAT = "simsearch-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_FILE = "model.pt"  # what training writes into its output folder


class CheckpointError(ValueError):
    """The file is missing, corrupt, or not a compatible simsearch checkpoint."""


@dataclass
class Checkpoint:
    config: TrainConfig
    class_names: list[str]
    model: EmbeddingNet
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # data source, split, timings...
    versions: dict = field(default_factory=dict)
    # named float32 arrays saved with the weights, e.g. the copy objective's background descriptors for score
    # normalisation (similarity.copies.BACKGROUND_ARRAY)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    sha256: str = ""
    path: str = ""

    @property
    def preprocess(self) -> PreprocessSpec:
        return self.config.preprocess

    @property
    def objective(self) -> str:
        """What the model was trained for: "classes" (a class embedding; every checkpoint without the field) or
        "copies" (a copy descriptor: an image's edited copies are its nearest neighbours)."""
        return self.config.objective

    def embedder(self, device: str = "cpu"):
        from similarity.embedder import Embedder

        return Embedder(self.model, self.preprocess, device=device, model_id=self.sha256)

    def model_info(self) -> dict[str, Any]:
        """What an index must agree with to hold this model's embeddings."""
        return {
            "checkpoint_sha256": self.sha256,
            "embedding_dim": self.config.model.embedding_dim,
            "metric": "cosine",
            "preprocess": _jsonable(asdict(self.preprocess)),
            "backbone": self.config.model.backbone,
            "objective": self.objective,
            "class_names": list(self.class_names),
        }


def versions() -> dict[str, str]:
    import numpy
    import pytorch_metric_learning
    import torchvision

    return {"simsearch": simsearch_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "pytorch_metric_learning": pytorch_metric_learning.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def save_checkpoint(path: str | os.PathLike, model: EmbeddingNet, config: TrainConfig, class_names: list[str], *,
                    history: list[dict] | None = None, metrics: dict | None = None,
                    extra: dict | None = None, arrays: dict[str, np.ndarray] | None = None) -> str:
    """Atomically write a checkpoint; returns its sha256. ``arrays``: named arrays stored beside the weights
    (float32 tensors; read back as :attr:`Checkpoint.arrays`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": _jsonable(config.to_dict()),
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "history": _jsonable(history or []),
        "metrics": _jsonable(metrics or {}),
        "extra": _jsonable(extra or {}),
        "versions": versions(),
    }
    if arrays:
        payload["arrays"] = {name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                             for name, a in arrays.items()}
    atomic_write(path, lambda handle: torch.save(payload, handle))
    return file_sha256(path)


def load_checkpoint(path: str | os.PathLike, *, map_location: str = "cpu") -> Checkpoint:
    """Rebuild the model (in eval mode) from a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # not torch's advice
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {reason}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a simsearch checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload.get('format_version')}, this simsearch reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        config = from_dict(TrainConfig, payload["config"])
        # the weights come from the checkpoint, never from a download
        model_config = from_dict(type(config.model), {**payload["config"]["model"], "pretrained": False})
        model = EmbeddingNet(model_config, config.preprocess)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not match this version's model code: {exc}") from exc
    model.eval()
    return Checkpoint(config=config, class_names=list(payload["class_names"]), model=model,
                      history=payload.get("history", []), metrics=payload.get("metrics", {}),
                      extra=payload.get("extra", {}), versions=payload.get("versions", {}),
                      arrays={name: t.numpy() for name, t in payload.get("arrays", {}).items()}, sha256=file_sha256(path), path=str(path))

"""Choosing what runs the model: torch (:class:`similarity.embedder.Embedder`) or ONNX Runtime
(:class:`similarity.onnx_runtime.OnnxEmbedder`).  :func:`load_embedder` is the one place that decides; the engine,
the API and the CLI call it.

With ONNX Runtime the model is a ``.onnx`` file: the one given, which must record the checkpoint's sha256, or
else the cache beside the checkpoint (``model.onnx`` beside ``model.pt``), exported when it is missing or records
another checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from similarity.checkpoint import Checkpoint
from similarity.embedder import ImageEmbedder
from similarity.onnx_format import ONNX_SUFFIX, OnnxExportError, OnnxModelError

if TYPE_CHECKING:
    from similarity.onnx_runtime import OnnxEmbedder

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx", "auto")
DEFAULT_RUNTIME = "torch"  # the library's default: an Engine embeds with torch unless told otherwise
CLI_DEFAULT_RUNTIME = "auto"  # the commands' default (serve, index build/add, query, report)


@dataclass(frozen=True)
class EmbedRuntime:
    """``name``: torch, onnx or auto (see :func:`auto_runtime`).  ``onnx_path``: the ONNX file to run (onnx or
    auto; default: the cache beside the checkpoint).  ``threads``: ONNX Runtime's intra-op threads (None: its
    default, one per physical core); torch's are process-wide, set with ``torch.set_num_threads``."""

    name: str = DEFAULT_RUNTIME
    onnx_path: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.name not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.name!r}; choose one of {', '.join(RUNTIMES)}")
        if self.onnx_path is not None and self.name == "torch":
            raise ValueError(f"an ONNX file ({self.onnx_path}) is run by runtime onnx or auto, not torch")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def auto_runtime() -> str:
    """What ``auto`` means: ONNX Runtime (fp32) whenever it is installed, else torch; :func:`load_embedder` falls
    back to torch if the model does not export.  Measured on 2 CPU cores (``bench/inference_table.py``): ONNX
    Runtime fp32 embeds exactly as torch (max abs difference < 1e-6) and is faster for both shipped model kinds,
    single images 0.29 vs 1.94 ms (small CNN with flip TTA) and 1.34 vs 7.8 ms (EfficientNet-Lite0, 150 px),
    batches 1.5x and 4.5x.  int8 is never chosen automatically: it changes the embeddings (TrashNet kNN accuracy
    -0.59 points); run it explicitly with ``--onnx model.int8.onnx``."""
    return "onnx" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def onnx_cache_path(checkpoint: Checkpoint) -> Path:
    """Where the checkpoint's exported ONNX model is kept: beside it, ``model.pt`` -> ``model.onnx``."""
    if not checkpoint.path:
        raise ValueError("the checkpoint was not loaded from a file, so it has no place for its ONNX export")
    return Path(checkpoint.path).with_suffix(ONNX_SUFFIX)


def load_embedder(checkpoint: Checkpoint, runtime: EmbedRuntime = EmbedRuntime()) -> ImageEmbedder:
    """The embedder for ``checkpoint`` under ``runtime``.  Raises :class:`OnnxModelError` for an ONNX file that is
    unreadable or records another checkpoint, :class:`OnnxExportError` when onnx was asked for and the export
    fails (auto falls back to torch)."""
    if runtime.name == "torch":
        return checkpoint.embedder()
    if runtime.name == "onnx":
        embedder = _onnx_embedder(checkpoint, runtime)
        log.info("runtime onnx: %s", embedder.describe())
        return embedder
    chosen = auto_runtime()
    if chosen == "onnx":
        try:
            embedder = _onnx_embedder(checkpoint, runtime)
            log.info("runtime auto chose onnx: %s", embedder.describe())
            return embedder
        except (OnnxExportError, ImportError, OSError) as exc:  # a given file that does not fit is an error
            log.warning("runtime auto: no ONNX model (%s); embedding with torch", exc)
    else:
        log.info("runtime auto chose torch: onnxruntime is not installed")
    return checkpoint.embedder()


def _onnx_embedder(checkpoint: Checkpoint, runtime: EmbedRuntime) -> OnnxEmbedder:
    from similarity.onnx_runtime import OnnxEmbedder

    if runtime.onnx_path is not None:
        embedder = OnnxEmbedder(runtime.onnx_path, threads=runtime.threads)
        _require_same_model(embedder.model_id, checkpoint, runtime.onnx_path)
        return embedder
    cache = onnx_cache_path(checkpoint)
    if cache.is_file():
        try:
            embedder = OnnxEmbedder(cache, threads=runtime.threads)
            if embedder.model_id == checkpoint.sha256:
                return embedder
            log.info("%s was exported from checkpoint %s, not %s: exporting again", cache, embedder.model_id[:12],
                     checkpoint.sha256[:12])
        except OnnxModelError as exc:
            log.warning("replacing the unusable ONNX cache %s: %s", cache, exc)
    from similarity.onnx_export import export_onnx

    export_onnx(checkpoint, cache)
    embedder = OnnxEmbedder(cache, threads=runtime.threads)
    _require_same_model(embedder.model_id, checkpoint, str(cache))  # another process replaced it meanwhile
    return embedder


def _require_same_model(onnx_sha256: str, checkpoint: Checkpoint, path: str) -> None:
    if onnx_sha256 != checkpoint.sha256:
        raise OnnxModelError(f"{path} was exported from checkpoint sha256 {onnx_sha256}, but the checkpoint "
                             f"{checkpoint.path or ''} has sha256 {checkpoint.sha256}: use the ONNX file of this "
                             "checkpoint (simsearch export writes one)")

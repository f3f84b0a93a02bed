"""Building and growing an index directory with a checkpoint.  An index directory is self-contained: it
holds a copy of the checkpoint (``model.pt``, see :mod:`engine.layout`) beside the store (``index``).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine.layout import MODEL_FILE
from index import MODEL_FIELDS, IndexConfig, IndexStore
from index.persist import fsync_dir, write_file_atomic
from similarity.checkpoint import Checkpoint, load_checkpoint
from similarity.data import LabelledImages, SkippedFile
from similarity.embedder import Embedder

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    directory: str
    added: int
    skipped: list[SkippedFile] = field(default_factory=list)
    index_type: str = ""
    embed_seconds: float = 0.0
    images_per_second: float = 0.0


def checkpoint_for(index_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Checkpoint:
    """The checkpoint an index was built with (``index_dir/model.pt``), or an explicit one."""
    path = Path(checkpoint) if checkpoint else Path(index_dir) / MODEL_FILE
    return load_checkpoint(path)


def open_index(index_dir: str | os.PathLike, checkpoint: Checkpoint) -> IndexStore:
    """Open an index, refusing it when it was built with another model (dim, preprocessing, weights)."""
    return IndexStore.open(str(index_dir), expect_model=index_model_info(checkpoint))


def check_index(index_dir: str | os.PathLike) -> None:
    """Raise ``IndexStoreError`` saying why ``index_dir`` is not a usable index (without its model)."""
    IndexStore.open(str(index_dir)).close()


def index_model_info(checkpoint: Checkpoint) -> dict:
    info = checkpoint.model_info()
    return {key: info[key] for key in MODEL_FIELDS}


def add_images(store: IndexStore, embedder: Embedder, data: LabelledImages, *, batch_size: int = 256,
               num_workers: int = 0, progress: bool = True, source: str | None = None) -> tuple[np.ndarray, list[SkippedFile]]:
    """Embed ``data`` (file-backed) and append it to ``store``; returns (new ids, skipped files)."""
    _require_files(data)
    result = embedder.embed_data(data, batch_size=batch_size, num_workers=num_workers, progress=progress)
    return _append(store, data, result.embeddings, result.kept, source), result.skipped


def _require_files(data: LabelledImages) -> None:
    if data.paths is None:
        raise ValueError("indexing needs image files (the API serves them); export in-memory images with "
                         "similarity.data.export_to_folder")


def _append(store: IndexStore, data: LabelledImages, embeddings: np.ndarray, kept: np.ndarray,
            source: str | None = None) -> np.ndarray:
    """Add the embeddings of ``data``'s rows ``kept`` with their labels and absolute paths; returns ids."""
    if not len(kept):
        return np.zeros(0, np.int64)
    assert data.paths is not None
    return store.add(embeddings, labels=[data.class_names[data.labels[i]] for i in kept],
                     paths=[os.path.abspath(data.paths[i]) for i in kept],
                     sources=[source or data.source] * len(kept))


def build_index(checkpoint_path: str | os.PathLike, data: LabelledImages, out_dir: str | os.PathLike, *,
                config: IndexConfig = IndexConfig(), batch_size: int = 256, num_workers: int = 0,
                progress: bool = True) -> BuildSummary:
    """Embed every image of ``data`` with the checkpoint and write a new index directory."""
    import time

    _require_files(data)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory or delete it")
    checkpoint = load_checkpoint(checkpoint_path)
    out.mkdir(parents=True, exist_ok=True)
    write_file_atomic(str(out / MODEL_FILE), lambda tmp: shutil.copyfile(checkpoint_path, tmp))
    fsync_dir(str(out))
    embedder = checkpoint.embedder()
    started = time.perf_counter()
    result = embedder.embed_data(data, batch_size=batch_size, num_workers=num_workers, progress=progress)
    seconds = time.perf_counter() - started
    if config.expected_size is None:
        config = replace(config, expected_size=max(1, len(result.kept)))
    store = IndexStore.create(str(out), checkpoint.config.model.embedding_dim, config=config,
                              model_info=index_model_info(checkpoint))
    try:
        _append(store, data, result.embeddings, result.kept)
        store.checkpoint()  # so that opening loads the FAISS index instead of replaying the whole log
        index_type = store.index_type or ""
    finally:
        store.close()
    return BuildSummary(str(out), len(result.kept), result.skipped, index_type,
                        seconds, len(data) / seconds if seconds else 0.0)

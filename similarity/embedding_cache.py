"""Embeddings of a collection under one model, kept so that a pipeline embeds each image once.

Training ends by embedding every image it was given, to score itself; ``simsearch index build`` and
``simsearch report`` would embed the same images again with the same model. This cache keeps each (model,
collection) result as one ``.npz`` file named by the model's checkpoint sha256 (``ImageEmbedder.model_id``)
and a digest of the collection's image ids, labels and class names. It is a view: deleting it costs time, never
a result.

A stored result is checked before it is used: a seeded sample of :data:`VERIFY_SAMPLE` images is embedded
afresh and must match the stored vectors (cosine >= :data:`VERIFY_COSINE`, which ONNX Runtime and torch both
meet for the same checkpoint), so a collection whose files changed under the same names is embedded again.

Where: ``$SIMSEARCH_EMBEDDING_CACHE`` (a folder, or ``off``), else ``$XDG_CACHE_HOME/simsearch/embeddings``,
else ``~/.cache/simsearch/embeddings``. The newest :data:`KEEP_MODELS` models' entries are kept.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from durablefile import atomic_write
from similarity.data import UNLABELLED, LabelledImages, SkippedFile

log = logging.getLogger(__name__)

ENV_VAR = "SIMSEARCH_EMBEDDING_CACHE"
VERIFY_SAMPLE = 32  # images embedded afresh to check a stored result
VERIFY_COSINE = 0.999  # each must be at least this close to its stored vector
KEEP_MODELS = 8  # models whose entries are kept (the most recently written)
FORMAT = 1


def default_root() -> Path | None:
    """The cache folder from the environment (None: ``$SIMSEARCH_EMBEDDING_CACHE=off``)."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured.lower() in ("off", "0", "none"):
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "simsearch" / "embeddings"


def collection_key(data: LabelledImages) -> str:
    """A digest of what names the images: their ids in order, and each one's class name (none for an unlabelled
    collection)."""
    digest = hashlib.sha256()
    for image_id, label in zip(data.ids, data.labels.tolist()):
        name = data.class_names[label] if label != UNLABELLED else ""
        digest.update(f"{image_id}\t{name}\n".encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class CachedEmbeddings:
    """``embeddings: (m, dim) float32`` of the collection's rows ``kept``; ``skipped``: the unreadable files."""

    embeddings: np.ndarray
    kept: np.ndarray
    skipped: list[SkippedFile]


class EmbeddingCache:
    """The ``.npz`` results under ``root/<model sha256>/<collection key>.npz``."""

    def __init__(self, root: str | os.PathLike, keep_models: int = KEEP_MODELS) -> None:
        self.root = Path(root)
        self.keep_models = keep_models

    @classmethod
    def from_environment(cls) -> "EmbeddingCache | None":
        root = default_root()
        return None if root is None else cls(root)

    def path_for(self, model_id: str, data: LabelledImages) -> Path:
        if not model_id:
            raise ValueError("a cached result needs the model's checkpoint sha256")
        return self.root / model_id / f"{collection_key(data)}.npz"

    def load(self, model_id: str, data: LabelledImages) -> CachedEmbeddings | None:
        """The stored result for ``data`` under the model, unchecked; None when there is none or it is unreadable."""
        path = self.path_for(model_id, data)
        try:
            with np.load(path, allow_pickle=False) as stored:
                if int(stored["format"]) != FORMAT or len(stored["ids"]) != len(data):
                    return None
                skipped = [SkippedFile(str(p), str(r)) for p, r in zip(stored["skipped_paths"], stored["skipped_reasons"])]
                return CachedEmbeddings(stored["embeddings"].astype(np.float32, copy=False),
                                        stored["kept"].astype(np.int64, copy=False), skipped)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring an unreadable embedding cache file %s: %s", path, exc)
            return None

    def save(self, model_id: str, data: LabelledImages, embeddings: np.ndarray, kept: np.ndarray,
             skipped: list[SkippedFile] = ()) -> Path | None:
        """Store one result (atomically; not fsynced: a cache survives a crash or is rebuilt) and prune old models.
        A cache that cannot be written (no space, no permission) costs time later, never the caller's result:
        the error is logged and None returned."""
        path = self.path_for(model_id, data)
        buffer = io.BytesIO()
        np.savez(buffer, format=np.int64(FORMAT), ids=np.asarray(data.ids, dtype=str),
                 embeddings=np.asarray(embeddings, np.float32), kept=np.asarray(kept, np.int64),
                 skipped_paths=np.asarray([s.path for s in skipped], dtype=str),
                 skipped_reasons=np.asarray([s.reason for s in skipped], dtype=str))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, buffer.getbuffer(), durable=False)
            os.utime(path.parent)
            self.prune()
        except OSError as exc:
            log.warning("could not store embeddings in the cache %s: %s", self.root, exc)
            return None
        return path

    def prune(self) -> None:
        """Delete all but the ``keep_models`` most recently written models' entries."""
        models = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in models[self.keep_models:]:
            shutil.rmtree(stale, ignore_errors=True)


def verified(embedder, data: LabelledImages, cached: CachedEmbeddings, *, sample: int = VERIFY_SAMPLE,
             seed: int = 0) -> bool:
    """Whether a seeded sample of ``data``'s kept rows embeds (with ``embedder``) as ``cached`` says."""
    if not len(cached.kept):
        return True
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(cached.kept), size=min(sample, len(cached.kept)), replace=False))
    fresh = embedder.embed_data(data.subset(cached.kept[rows]), progress=False)
    if len(fresh.kept) != len(rows):  # a file that decoded then does not now
        return False
    cosines = np.sum(fresh.embeddings * cached.embeddings[rows], axis=1)
    return bool(np.all(cosines >= VERIFY_COSINE))

"""Turning images into embeddings with a trained model: the one inference path.

decode (``similarity.imageio``) -> preprocess (``eval_transform`` of the checkpoint's spec) -> model.
:class:`ImageEmbedder` holds the first two steps for every runtime; :class:`Embedder` runs the model with
torch, :class:`similarity.onnx_runtime.OnnxEmbedder` with ONNX Runtime (see :mod:`similarity.runtime`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from similarity.config import PreprocessSpec
from similarity.data import LabelledImages, SkippedFile
from similarity.embedding_cache import EmbeddingCache, verified
from similarity.imageio import ImageDecodeError, open_image
from similarity.models import EmbeddingNet
from similarity.transforms import eval_transform, pixels_to_tensor, supports_fast_path
from similarity.workers import worker_context

log = logging.getLogger(__name__)


@dataclass
class EmbedResult:
    """embeddings: (m, dim) float32 for the ``kept`` indices (into the input) that decoded."""

    embeddings: np.ndarray
    kept: np.ndarray
    skipped: list[SkippedFile] = field(default_factory=list)


class _DecodeDataset(Dataset):
    """Decodes and preprocesses file i; a bad file yields its error message instead of a tensor."""

    def __init__(self, data: LabelledImages | Sequence[str], transform):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        try:
            image = self.data.load(i) if isinstance(self.data, LabelledImages) else open_image(self.data[i])
            return i, self.transform(image), ""
        except ImageDecodeError as exc:
            return i, None, str(exc)


def _collate(items):
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, err) for i, x, err in items if x is None]
    xs = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], xs, bad


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


class ImageEmbedder(ABC):
    """What every inference runtime shares: the checkpoint's preprocessing, decoding, batching and the
    skipping of unreadable files.  A subclass runs the network in :meth:`embed_tensor` and sets ``runtime``,
    ``dim``, ``model_id`` (the checkpoint's sha256, which an index checks) and ``device``."""

    runtime: str  # its name among similarity.runtime.RUNTIMES
    dim: int
    model_id: str
    device: torch.device

    def __init__(self, preprocess: PreprocessSpec) -> None:
        self.preprocess = preprocess
        self.transform = eval_transform(preprocess)

    @abstractmethod
    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        """x: (B, C, H, W) preprocessed float32 -> (B, dim) float32, L2-normalised."""

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Decoded PIL images (any mode) -> (n, dim) float32."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_tensor(torch.stack([self.transform(image) for image in images]))

    def embed_data(self, data: LabelledImages | Sequence[str], *, batch_size: int = 256, num_workers: int = 0,
                   progress: bool = True, cache: EmbeddingCache | None = None) -> EmbedResult:
        """Embed a collection (or a list of file paths) in batches; unreadable files are skipped and
        reported in ``skipped``.  With ``cache``, a collection this model embedded before is read back (after
        a spot check, see :mod:`similarity.embedding_cache`) and a new result is stored."""
        use_cache = cache is not None and isinstance(data, LabelledImages) and bool(self.model_id)
        if use_cache:
            stored = cache.load(self.model_id, data)
            if stored is not None and verified(self, data, stored):
                log.info("embeddings of %d images read from the cache (model %s)", len(stored.kept), self.model_id[:12])
                if progress:
                    print(f"embedding: {len(stored.kept)} images already embedded by this model (cache, spot-checked)")
                return EmbedResult(stored.embeddings, stored.kept, list(stored.skipped))
        result = self._embed_all(data, batch_size=batch_size, num_workers=num_workers, progress=progress)
        if use_cache:
            cache.save(self.model_id, data, result.embeddings, result.kept, result.skipped)
        return result

    def _embed_all(self, data: LabelledImages | Sequence[str], *, batch_size: int, num_workers: int,
                   progress: bool) -> EmbedResult:
        from tqdm.auto import tqdm

        paths = data.paths if isinstance(data, LabelledImages) else list(data)
        kept, chunks, skipped = [], [], []
        with tqdm(total=len(data), desc="embedding", unit="img", disable=not progress) as bar:
            for indices, xs, bad in preprocessed_batches(data, self.preprocess, batch_size=batch_size,
                                                         num_workers=num_workers):
                if xs is not None:
                    chunks.append(self.embed_tensor(xs))
                    kept.extend(indices)
                for i, err in bad:
                    skipped.append(SkippedFile(str(paths[i]) if paths else str(i), err))
                    log.warning("skipping unreadable image: %s", err)
                bar.update(len(indices) + len(bad))
        embeddings = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)
        return EmbedResult(embeddings, np.asarray(kept, dtype=np.int64), skipped)


PreprocessedBatch = tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]  # (indices, xs, bad)


def preprocessed_batches(data: LabelledImages | Sequence[str], preprocess: PreprocessSpec, *, batch_size: int = 256,
                         num_workers: int = 0) -> Iterator[PreprocessedBatch]:
    """Decode and preprocess ``data`` in order, in batches: ``(indices, xs, bad)`` with ``xs`` the
    (len(indices), C, H, W) float32 inputs of the images ``indices`` (None if none decoded) and ``bad`` the
    ``(index, error message)`` of files that did not decode.  In-memory grayscale pixels of the model's size
    take a vectorised path that gives the same tensors."""
    if isinstance(data, LabelledImages) and supports_fast_path(data.pixels, preprocess):
        for start in range(0, len(data), batch_size):
            xs = pixels_to_tensor(data.pixels[start:start + batch_size], preprocess)
            yield list(range(start, start + len(xs))), xs, []
        return
    loader = DataLoader(_DecodeDataset(data, eval_transform(preprocess)), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate, persistent_workers=False,
                        multiprocessing_context=worker_context(num_workers))
    yield from loader


class Embedder(ImageEmbedder):
    """A trained :class:`EmbeddingNet` run by torch, plus its preprocessing. Outputs L2-normalised float32."""

    runtime = "torch"

    def __init__(self, model: EmbeddingNet, preprocess: PreprocessSpec, *, device: str | torch.device = "cpu",
                 model_id: str = ""):
        super().__init__(preprocess)
        self.device = torch.device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model_id = model_id
        self.dim = model.config.embedding_dim

    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        """x: (B, C, H, W) preprocessed float32 -> (B, dim) float32."""
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=True)
            if self.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            out = self.model(x)
            if self.preprocess.flip_tta:
                out = torch.nn.functional.normalize(out + self.model(x.flip(3)), dim=1)
            return out.float().cpu().numpy()

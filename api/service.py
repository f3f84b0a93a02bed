"""``SearchService``: the API's work without any HTTP: decode → embed → search → vote, plus adding,
deleting and serving indexed images.  The Flask views only parse requests and format answers.

Every step is delegated: decoding to ``similarity.imageio.open_image``, embedding to the checkpoint's
``Embedder``, search and storage to ``index.IndexStore`` (through :class:`api.sync.SharedIndex`, which
keeps several processes consistent), voting to ``index.majority_vote``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from api.config import ApiConfig
from api.errors import InvalidImage, InvalidRequest, ItemNotFound
from api.sync import SharedIndex
from index import IndexStore, ItemMeta, Neighbor, Vote, majority_vote
from similarity.embedder import Embedder
from similarity.imageio import ImageDecodeError, open_image

logger = logging.getLogger(__name__)

UPLOADS_DIR = "uploads"
MAX_LABEL_CHARS = 100
_LABEL_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
# format Pillow reports -> (file extension, MIME type) for stored uploads
_FORMATS = {"PNG": (".png", "image/png"), "JPEG": (".jpg", "image/jpeg"), "GIF": (".gif", "image/gif"),
            "BMP": (".bmp", "image/bmp"), "WEBP": (".webp", "image/webp"), "TIFF": (".tif", "image/tiff"),
            "PPM": (".ppm", "image/x-portable-anymap")}
THUMBNAIL_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}


@dataclass(frozen=True)
class SearchResult:
    """One query's neighbours (best first), their vote and the time of each step in milliseconds."""

    neighbors: list[Neighbor]
    vote: Vote
    weighted: bool
    timings_ms: dict[str, float] = field(default_factory=dict)


class ThumbnailCache:
    """A small thread-safe LRU of encoded thumbnails keyed by ``(id, path, size, format)``."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple, data: bytes) -> None:
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


class SearchService:
    """Search, classify and maintain one index directory with the model it was built with."""

    def __init__(self, embedder: Embedder, index: SharedIndex, config: ApiConfig, *, model_info: dict) -> None:
        self._embedder = embedder
        self._index = index
        self.config = config
        self._model_info = dict(model_info)
        self._rng = np.random.default_rng(config.random_seed)
        self._rng_lock = threading.Lock()
        self._thumbnails = ThumbnailCache(config.thumbnail_cache_items)
        self._started = time.time()

    @classmethod
    def from_config(cls, config: ApiConfig) -> "SearchService":
        """Load the checkpoint (``index_dir/model.pt`` unless ``config.checkpoint``) and open the index,
        refusing one built with another model.  Raises ``CheckpointError`` / ``IndexStoreError``."""
        from simsearch.pipeline import checkpoint_for, open_index

        if config.torch_threads:
            import torch

            torch.set_num_threads(config.torch_threads)
        checkpoint = checkpoint_for(config.index_dir, config.checkpoint)
        index = SharedIndex(config.index_dir, lambda: open_index(config.index_dir, checkpoint))
        logger.info("serving %s with model %s (%d classes)", config.index_dir, checkpoint.sha256[:12],
                    len(checkpoint.class_names))
        return cls(checkpoint.embedder(), index, config, model_info=checkpoint.model_info())

    def close(self) -> None:
        self._index.close()

    # ------------------------------------------------------------------ queries
    def decode(self, data: bytes, name: str = "image") -> Image.Image:
        """Bytes of an upload -> an "RGB"/"L" image; raises :class:`InvalidImage`."""
        try:
            return open_image(data, max_pixels=self.config.max_pixels)
        except ImageDecodeError as exc:
            raise InvalidImage(str(exc).replace("upload:", f"{name}:", 1)) from None

    def search(self, uploads: list[bytes], *, k: int, weighted: bool = False) -> list[SearchResult]:
        """Nearest ``k`` items and the majority vote for each uploaded image (raw file bytes)."""
        if not uploads:
            raise InvalidRequest("no image given")
        started = time.perf_counter()
        names = ["image"] if len(uploads) == 1 else [f"images[{i}]" for i in range(len(uploads))]
        images = [self.decode(data, name) for data, name in zip(uploads, names)]
        decoded = time.perf_counter()
        xq = self._embedder.embed_images(images)
        embedded = time.perf_counter()
        with self._index.reading() as store:
            hits = store.search(xq, k)
        searched = time.perf_counter()
        results = [self._vote(h, weighted) for h in hits]
        done = time.perf_counter()
        timings = {"decode": _ms(decoded - started), "embed": _ms(embedded - decoded),
                   "search": _ms(searched - embedded), "vote": _ms(done - searched), "total": _ms(done - started)}
        return [SearchResult(r.neighbors, r.vote, weighted, timings) for r in results]

    def similar(self, item_id: int, *, k: int, weighted: bool = False) -> tuple[ItemMeta, SearchResult]:
        """The ``k`` nearest other items of an indexed item (the item itself is left out)."""
        started = time.perf_counter()
        with self._index.reading() as store:
            item = self._live_item(store, item_id)
            xq = self._stored_vector(store, item)
            hits = store.search(xq, k + 1)[0]
        hits = [n for n in hits if n.id != item_id][:k]
        searched = time.perf_counter()
        result = self._vote(hits, weighted)
        return item, SearchResult(result.neighbors, result.vote, weighted,
                                  {"search": _ms(searched - started), "total": _ms(time.perf_counter() - started)})

    def _vote(self, neighbors: list[Neighbor], weighted: bool) -> SearchResult:
        vote = majority_vote([n.label for n in neighbors], [n.similarity for n in neighbors], weighted=weighted,
                             unknown_below=self.config.unknown_below)
        return SearchResult(neighbors, vote, weighted)

    def _stored_vector(self, store: IndexStore, item: ItemMeta) -> np.ndarray:
        try:
            vector = store.reconstruct(item.id)
        except Exception:  # noqa: BLE001 - IVF-PQ keeps no vectors: embed the stored file instead
            return self._embedder.embed_images([self._open_file(item)])
        # faiss's torch bridge, when something imported it, hands back a torch tensor
        return np.asarray(vector, dtype=np.float32).reshape(1, -1)

    # ------------------------------------------------------------------ items
    def item(self, item_id: int) -> ItemMeta:
        with self._index.reading() as store:
            return self._live_item(store, item_id)

    @staticmethod
    def _live_item(store: IndexStore, item_id: int) -> ItemMeta:
        meta = store.get(item_id) if 0 <= item_id < 2**63 else None
        if meta is None:
            raise ItemNotFound(f"no indexed image with id {item_id}")
        return meta

    def image_file(self, item_id: int) -> tuple[str, str | None]:
        """``(path, MIME type or None)`` of an item's stored file, looked up by id in the metadata only."""
        item = self.item(item_id)
        if not os.path.isfile(item.path):
            raise ItemNotFound(f"the file of image {item_id} is missing on the server")
        mime = next((m for ext, m in _FORMATS.values() if item.path.lower().endswith(ext)), None)
        if item.path.lower().endswith(".jpeg"):
            mime = "image/jpeg"
        return item.path, mime

    def thumbnail(self, item_id: int, size: int, fmt: str = "jpeg") -> bytes:
        """The item's image scaled to fit ``size × size`` pixels (up or down), encoded as JPEG or PNG."""
        if size not in self.config.thumbnail_sizes:
            raise InvalidRequest(f"size must be one of {list(self.config.thumbnail_sizes)}, got {size}")
        if fmt not in THUMBNAIL_FORMATS:
            raise InvalidRequest(f"format must be one of {sorted(THUMBNAIL_FORMATS)}, got {fmt!r}")
        item = self.item(item_id)
        key = (item.id, item.path, size, fmt)
        cached = self._thumbnails.get(key)
        if cached is not None:
            return cached
        image = self._open_file(item)
        # nearest-neighbour keeps tiny images (28x28) crisp when enlarged; photos use a smooth filter
        resample = Image.Resampling.NEAREST if max(image.size) * 2 <= size else Image.Resampling.LANCZOS
        thumb = ImageOps.contain(image, (size, size), method=resample)
        buffer = io.BytesIO()
        if fmt == "jpeg":
            thumb.save(buffer, "JPEG", quality=85)
        else:
            thumb.save(buffer, "PNG", optimize=False)
        data = buffer.getvalue()
        self._thumbnails.put(key, data)
        return data

    def _open_file(self, item: ItemMeta) -> Image.Image:
        try:
            return open_image(item.path, max_pixels=self.config.max_pixels)
        except ImageDecodeError as exc:
            logger.warning("stored image %d unreadable: %s", item.id, exc)
            raise ItemNotFound(f"the file of image {item.id} is missing or unreadable on the server") from None

    def random_items(self, n: int) -> list[ItemMeta]:
        """Up to ``n`` distinct live items drawn at random (with the config's seed)."""
        with self._index.reading() as store:
            if len(store) == 0:
                return []
            with self._rng_lock:
                ids = store.random_ids(n, self._rng)
            return [m for m in (store.get(int(i)) for i in ids) if m is not None]

    # ------------------------------------------------------------------ writes
    def add_image(self, data: bytes, label: str) -> ItemMeta:
        """Store the upload under ``<index_dir>/uploads/`` with a generated name, embed it, add it and
        save the index (across processes, under the write lock) before returning its metadata."""
        label = self._check_label(label)
        image = self.decode(data)
        fmt = _sniff_format(data)
        ext = _FORMATS.get(fmt, (".img", None))[0]
        xb = self._embedder.embed_images([image])
        uploads = os.path.join(self.config.index_dir, UPLOADS_DIR)
        os.makedirs(uploads, exist_ok=True)
        path = os.path.abspath(os.path.join(uploads, uuid.uuid4().hex + ext))
        _write_atomic(path, data)
        try:
            with self._index.writing() as store:
                ids = store.add(xb, labels=[label], paths=[path], sources=["upload"])
                store.save()
                item = store.get(int(ids[0]))
        except BaseException:
            _remove_quietly(path)
            raise
        assert item is not None
        logger.info("added image %d (%s) as %s", item.id, label, path)
        return item

    def delete(self, item_id: int) -> None:
        """Remove an item for good (saved before returning); its uploaded file, if any, is deleted."""
        self.item(item_id)  # an unknown id is refused without taking the write lock (or reloading after it)
        with self._index.writing() as store:
            item = self._live_item(store, item_id)
            store.remove([item_id])
            store.save()
        uploads = os.path.abspath(os.path.join(self.config.index_dir, UPLOADS_DIR)) + os.sep
        if os.path.abspath(item.path).startswith(uploads):
            _remove_quietly(item.path)
        logger.info("deleted image %d", item_id)

    @staticmethod
    def _check_label(label: str | None) -> str:
        label = (label or "").strip()
        if not label:
            raise InvalidRequest("form field 'label' is required (the class of the image)")
        if len(label) > MAX_LABEL_CHARS or _LABEL_FORBIDDEN.search(label):
            raise InvalidRequest(f"label must be at most {MAX_LABEL_CHARS} printable characters")
        return label

    # ------------------------------------------------------------------ info
    def stats(self) -> dict:
        with self._index.reading() as store:
            stats = store.stats()
        model = {k: v for k, v in self._model_info.items() if k != "preprocess"}
        model["preprocess"] = self._model_info.get("preprocess")
        return {
            "items": stats["ntotal"],
            "label_counts": stats["label_counts"],
            "model": model,
            "index": {key: stats[key] for key in ("index_type", "factory", "dim", "metric", "generation",
                                                   "created_at", "updated_at", "stored_vectors", "tombstones")},
            "writes_enabled": self.config.writes_enabled,
            "limits": {"default_k": self.config.default_k, "max_k": self.config.max_k,
                       "max_batch": self.config.max_batch, "max_upload_bytes": self.config.max_upload_bytes,
                       "thumbnail_sizes": list(self.config.thumbnail_sizes)},
        }

    def health(self) -> dict:
        with self._index.reading() as store:
            items = len(store)
        return {"status": "ok", "items": items, "generation": self._index.generation,
                "uptime_s": round(time.time() - self._started, 1), "pid": os.getpid()}


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _sniff_format(data: bytes) -> str | None:
    """Pillow's name for the format of already-validated image bytes (reads the header only)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # noqa: BLE001 - open_image already accepted it; the name is only cosmetic
        return None


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass

"""``SearchService``: the API's work without any HTTP.  The engine does decode -> embed -> search -> vote
and every write (:class:`engine.Engine`); this class adds what only a web service needs: request
limits, labels checked as form fields, thumbnails and their cache, stats and health, and the mapping of
engine errors to the API's errors.  The Flask views only parse requests and format answers.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import threading
import time
from collections import OrderedDict

from PIL import Image

from api.config import ApiConfig
from api.errors import InvalidImage, InvalidRequest, ItemNotFound, TooManyPixels
from api.querylog import QueryLog
from api.writable import WritableState
from engine.engine import Engine, PixelBudgetExceeded, SearchResult, make_rng, mime_type, set_torch_threads
from engine.ingestion import DEFAULT_POLICY, AddResult
from engine.live import LiveEngine
from index import MAX_LABEL_CHARS, NO_LABEL, IndexStoreError, ItemMeta
from similarity.imageio import ImageDecodeError, scale_to_fit

logger = logging.getLogger(__name__)

_LABEL_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
THUMBNAIL_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}


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

    def __init__(self, engine: Engine | LiveEngine, config: ApiConfig) -> None:
        self.live = engine if isinstance(engine, LiveEngine) else LiveEngine.of(engine)
        self.config = config
        self._rng = make_rng(config.random_seed)
        self._rng_lock = threading.Lock()
        self._thumbnails = ThumbnailCache(config.thumbnail_cache_items)
        self._started = time.time()
        self._writable = WritableState(self.live.engine.directory)
        self._query_log = None if config.query_log is None else QueryLog(
            config.query_log, rate=config.query_log_rate, max_bytes=config.query_log_max_bytes,
            seed=config.random_seed)

    @classmethod
    def from_config(cls, config: ApiConfig) -> "SearchService":
        """Open the engine (``model.pt`` in the index's home unless ``config.checkpoint``), refusing an index built with
        another model.  Raises ``CheckpointError`` / ``IndexStoreError``."""
        if config.torch_threads:
            set_torch_threads(config.torch_threads)
        live = LiveEngine(config.index, config.checkpoint, runtime=config.embed_runtime)
        engine = live.engine
        logger.info("serving %s (%s) with model %s (%d classes), runtime %s", config.index, live.target,
                    engine.checkpoint.sha256[:12], len(engine.checkpoint.class_names), engine.embedder.runtime)
        return cls(live, config)

    @property
    def engine(self) -> Engine:
        """The engine in use now (an alias's switch changes it): a request takes it once."""
        return self.live.engine

    def close(self) -> None:
        self.live.close()

    # ------------------------------------------------------------------ queries
    def search(self, uploads: list[bytes], *, k: int, weighted: bool = False,
               label: str | None = None) -> list[SearchResult]:
        """Nearest ``k`` items and the majority vote for each uploaded image (raw file bytes), decoded and
        embedded one at a time within the request's pixel budget."""
        if not uploads:
            raise InvalidRequest("no image given")
        names = ["image"] if len(uploads) == 1 else [f"images[{i}]" for i in range(len(uploads))]
        engine = self.engine  # once: the model that answers is the one the query log names
        try:
            results = engine.search(uploads, k=k, weighted=weighted, unknown_below=self.config.unknown_below,
                                    names=names, max_pixels=self.config.max_pixels,
                                    request_pixels=self.config.max_request_pixels, label=label)
        except ImageDecodeError as exc:
            raise InvalidImage(str(exc)) from None
        except PixelBudgetExceeded as exc:
            raise TooManyPixels(str(exc)) from None
        if self._query_log is not None:
            for upload, result in zip(uploads, results):
                self._query_log.maybe_log(upload, k=k, label=label, neighbor_ids=[n.id for n in result.neighbors],
                                          model_sha=engine.checkpoint.sha256)
        return results

    def similar(self, item_id: int, *, k: int, weighted: bool = False,
                label: str | None = None) -> tuple[ItemMeta, SearchResult]:
        """The ``k`` nearest other items of an indexed item (the item itself is left out)."""
        found = self.engine.similar(item_id, k=k, weighted=weighted, unknown_below=self.config.unknown_below,
                                    label=label)
        if found is None:
            raise ItemNotFound(f"no indexed image with id {item_id}")
        return found

    # ------------------------------------------------------------------ items
    def item(self, item_id: int) -> ItemMeta:
        meta = self.engine.get(item_id)
        if meta is None:
            raise ItemNotFound(f"no indexed image with id {item_id}")
        return meta

    def image_file(self, item_id: int) -> tuple[str, str | None]:
        """``(path, MIME type or None)`` of an item's stored file, looked up by id in the metadata only."""
        item = self.item(item_id)
        if not os.path.isfile(item.path):
            raise ItemNotFound(f"the file of image {item_id} is missing on the server")
        return item.path, mime_type(item.path)

    def image_etag(self, item_id: int, variant: str = "") -> str:
        """A strong validator (an ETag's value) of an item's image as served: a sha256 over the item id, its
        stored file's path, modification time (ns) and size, and ``variant`` (a thumbnail's size and format).
        It changes when the file does; an unknown id or a missing file is :class:`ItemNotFound`."""
        item = self.item(item_id)
        try:
            info = os.stat(item.path)
        except OSError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise ItemNotFound(f"the file of image {item_id} is missing on the server")
        key = f"{item.id}\0{item.path}\0{info.st_mtime_ns}\0{info.st_size}\0{variant}"
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    def check_thumbnail(self, size: int, fmt: str) -> None:
        """Refuse a thumbnail size or format the server does not make (:class:`InvalidRequest`)."""
        if size not in self.config.thumbnail_sizes:
            raise InvalidRequest(f"size must be one of {list(self.config.thumbnail_sizes)}, got {size}")
        if fmt not in THUMBNAIL_FORMATS:
            raise InvalidRequest(f"format must be one of {sorted(THUMBNAIL_FORMATS)}, got {fmt!r}")

    def thumbnail(self, item_id: int, size: int, fmt: str = "jpeg") -> bytes:
        """The item's image scaled to fit ``size × size`` pixels (up or down), encoded as JPEG or PNG."""
        self.check_thumbnail(size, fmt)
        item = self.item(item_id)
        key = (item.id, item.path, size, fmt)
        cached = self._thumbnails.get(key)
        if cached is not None:
            return cached
        thumb = scale_to_fit(self._open_file(item), size)
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
            return self.engine.open_file(item, max_pixels=self.config.max_pixels)
        except ImageDecodeError as exc:
            logger.warning("stored image %d unreadable: %s", item.id, exc)
            raise ItemNotFound(f"the file of image {item.id} is missing or unreadable on the server") from None

    def random_items(self, n: int) -> list[ItemMeta]:
        """Up to ``n`` distinct live items drawn at random (with the config's seed); O(n log N), no scan."""
        with self._rng_lock:
            return self.engine.random_items(n, self._rng)

    # ------------------------------------------------------------------ writes
    def add_image(self, data: bytes, label: str | None, *, duplicates: str = DEFAULT_POLICY) -> AddResult:
        """Embed the upload, store its file under ``uploads/`` in the index's home and add it: durable, and visible to
        every worker and process, when this returns.  ``label``: None for an image without one (it is found by
        search and takes no part in the vote).  ``duplicates``: the policy for an upload that duplicates an indexed
        image (``keep``, ``skip`` or ``flag``, see :meth:`Engine.add_image`)."""
        label = NO_LABEL if label is None else self.check_label(label, "form field 'label'")
        try:
            result = self.live.write(lambda engine: engine.add_image(data, label, max_pixels=self.config.max_pixels,
                                                                      duplicates=duplicates))
        except ImageDecodeError as exc:
            raise InvalidImage(str(exc)) from None
        except IndexStoreError as exc:
            self._writable.record(exc)
            raise  # busy, full, read-only, unavailable or unusable: 503/507 from the error handler, no 400
        except ValueError as exc:  # the store refused the item (e.g. an IVF index still too small to train)
            raise InvalidRequest(str(exc)) from None
        self._writable.record(None)
        return result

    def delete(self, item_id: int) -> None:
        """Remove an item for good (durable before returning); its uploaded file, if any, is deleted."""
        try:
            gone = self.live.write(lambda engine: engine.delete([item_id]) if engine.get(item_id) is not None else [])
        except IndexStoreError as exc:
            self._writable.record(exc)
            raise
        self._writable.record(None)
        if not gone:
            raise ItemNotFound(f"no indexed image with id {item_id}")
        logger.info("deleted image %d", item_id)

    @staticmethod
    def check_label(label: str | None, what: str = "form field 'label'") -> str:
        """A class label as sent (stripped): 1..MAX_LABEL_CHARS printable characters."""
        label = (label or "").strip()
        if not label:
            raise InvalidRequest(f"{what} must not be empty once surrounding whitespace is stripped")
        if len(label) > MAX_LABEL_CHARS:
            raise InvalidRequest(f"{what} must be at most {MAX_LABEL_CHARS} characters once surrounding "
                                 f"whitespace is stripped, got {len(label)}")
        if _LABEL_FORBIDDEN.search(label):
            raise InvalidRequest(f"{what} must not hold control characters (U+0000..U+001F, U+007F)")
        return label

    # ------------------------------------------------------------------ info
    def stats(self) -> dict:
        stats = self.engine.stats()
        model_info = self.engine.model_info
        model = {k: v for k, v in model_info.items() if k != "preprocess"}
        model["preprocess"] = model_info.get("preprocess")
        return {
            "items": stats["ntotal"],
            "label_counts": stats["label_counts"],
            "unlabelled_items": stats["unlabelled_items"],
            "model": model,
            "copy_model": self._copy_model(),
            "duplicate_rule": self._duplicate_rule(),
            "index": {key: stats[key] for key in ("backend", "index_type", "factory", "index_params",
                                                   "bytes_per_vector", "expected_recall", "dim", "metric",
                                                   "created_at", "stored_vectors", "tombstones", "log_head",
                                                   "snapshot", "changes_since_snapshot", "compaction_due",
                                                   "compaction_reason", "location", "collection")
                      if key in stats},
            "writes_enabled": self.config.writes_enabled,
            **self._alias_info(),
            "limits": {"default_k": self.config.default_k, "max_k": self.config.max_k,
                       "max_batch": self.config.max_batch, "max_upload_bytes": self.config.max_upload_bytes,
                       "thumbnail_sizes": list(self.config.thumbnail_sizes)},
        }

    def _copy_model(self) -> dict | None:
        """The copy descriptor whose vector each item carries too (it finds the duplicates), or None."""
        copy = self.engine.copy_checkpoint
        if copy is None:
            return None
        info = copy.model_info()
        return {key: info[key] for key in ("checkpoint_sha256", "embedding_dim", "backbone", "objective")
                if key in info}

    def _duplicate_rule(self) -> dict:
        """What makes an upload a copy of an indexed item: the rule's cosines and, for a copy descriptor, the index's
        calibrated cosine it follows (engine.duplicate_rule)."""
        engine = self.engine
        rule = engine.duplicate_rule
        calibration = engine.duplicate_calibration
        return {"cosine": rule.cosine, "descriptor_cosine": rule.descriptor_cosine, "phash_bits": rule.phash_bits,
                "min_inliers": rule.min_inliers, "min_correlation": rule.min_correlation,
                "calibration": None if calibration is None else calibration.to_dict()}

    def health(self) -> dict:
        problem = self._writable.problem()
        return {"status": "ok", "writable": problem is None, **({"write_problem": problem} if problem else {}),
                "items": len(self.engine), "backend": self.engine.store.backend,
                "runtime": self.engine.embedder.runtime, "log_head": self.engine.log_head(),
                "compaction_due": self.engine.compaction_due(),
                "uptime_s": round(time.time() - self._started, 1), "pid": os.getpid(), **self._alias_info()}

    def _alias_info(self) -> dict:
        """``{"alias": {"name", "target", "switches"}}`` when serving an alias (switches: seen by this worker)."""
        if self.live.alias is None:
            return {}
        return {"alias": {"name": self.live.alias, "target": self.live.target, "switches": self.live.switches}}

"""``Engine``: an index directory opened together with the checkpoint it was built with.

The single search path lives here (decode -> embed -> search -> vote), and so do the writes that involve
images: an upload's file is written and fsynced (file and folder) before the transaction that references
it commits, and :meth:`Engine.compact` (which compacts the index too) removes whatever a crash left
unreferenced.  The API, the CLI, the notebook and the benchmarks all call these methods.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from durablefile import atomic_write, fsync_dir
from engine.build import add_images, copy_checkpoint_of, open_index
from engine.dedup import DEFAULT_NEIGHBOURS, DuplicateReport, find_duplicates
from engine.ingestion import DEFAULT_POLICY, AddResult, DuplicateCounts, check_policy, find_in_store
from engine.layout import UPLOADS_DIR
from engine.duplicate_rule import COPIES_OBJECTIVE, Calibration, CalibrationCache, rule_for
from index import (NO_LABEL, ItemMeta, Maintainable, Neighbor, ServerCompacted, VectorStore, Vote, majority_vote,
                   storage_error)
from similarity.checkpoint import Checkpoint, CheckpointError
from similarity.data import LabelledImages, SkippedFile
from similarity.embedder import ImageEmbedder
from similarity.hygiene import DuplicateRule
from similarity.imageio import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageSource, open_image
from similarity.judge import ImageSignals
from similarity.runtime import EmbedRuntime, load_embedder

logger = logging.getLogger(__name__)

# format Pillow reports -> (file extension, MIME type) of stored uploads
UPLOAD_FORMATS = {"PNG": (".png", "image/png"), "JPEG": (".jpg", "image/jpeg"), "GIF": (".gif", "image/gif"),
                  "BMP": (".bmp", "image/bmp"), "WEBP": (".webp", "image/webp"), "TIFF": (".tif", "image/tiff"),
                  "PPM": (".ppm", "image/x-portable-anymap")}
DEFAULT_REQUEST_PIXELS = 100_000_000
ORPHAN_GRACE_S = 300.0


class PixelBudgetExceeded(ValueError):
    """The images of one request hold more pixels in total than the request budget allows."""


@dataclass(frozen=True)
class SearchResult:
    """One query's neighbors (best first), their vote (None when no neighbor carries a label) and the time of each
    step in milliseconds."""

    neighbors: list[Neighbor]
    vote: Vote | None
    weighted: bool
    timings_ms: dict[str, float] = field(default_factory=dict)


def mime_type(path: str) -> str | None:
    """The MIME type of a stored image file, from its extension (None if unknown)."""
    lower = path.lower()
    if lower.endswith(".jpeg"):
        return "image/jpeg"
    return next((mime for ext, mime in UPLOAD_FORMATS.values() if lower.endswith(ext)), None)


class Engine:
    """Search, classify and maintain one index with its model.  Thread-safe; one per process.

    ``directory`` is the index's home: ``model.pt``, ``uploads/`` and ``report/`` (the index directory
    itself, or the folder a Milvus collection names)."""

    def __init__(self, checkpoint: Checkpoint, store: VectorStore, embedder: ImageEmbedder | None = None,
                 copy_checkpoint: Checkpoint | None = None) -> None:
        """``embedder``: what runs the model (default: torch, ``checkpoint.embedder()``); it must embed with
        ``checkpoint`` (its ``model_id`` is the checkpoint's sha256).  ``copy_checkpoint``: the copy descriptor
        whose vector each item of ``store`` carries too (required by a store that keeps one)."""
        embedder = embedder if embedder is not None else checkpoint.embedder()
        if embedder.model_id != checkpoint.sha256:
            raise CheckpointError(f"the embedder runs model {embedder.model_id or '(unnamed)'}, the index's "
                                  f"checkpoint is {checkpoint.sha256}")
        if (store.descriptors is None) != (copy_checkpoint is None):
            raise CheckpointError(f"{store.location} keeps {'a' if store.descriptors else 'no'} copy descriptor per "
                                  f"item, and {'one' if copy_checkpoint else 'none'} was given")
        self.copy_checkpoint = copy_checkpoint
        self.copy_embedder = copy_checkpoint.embedder() if copy_checkpoint is not None else None
        self.directory = store.home
        self.location = store.location
        self.checkpoint = checkpoint
        self.store = store
        self.embedder = embedder
        self._uploads = os.path.join(os.path.abspath(self.directory), UPLOADS_DIR)  # stored absolute
        # the index's calibrated cosine, for a copy descriptor's rule (engine.duplicate_rule): measured when first asked
        self._calibration = (CalibrationCache(self.duplicate_space, rule_for(self.duplicate_checkpoint))
                            if self.duplicate_checkpoint.objective == COPIES_OBJECTIVE else None)

    @classmethod
    def open(cls, index: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
             runtime: EmbedRuntime = EmbedRuntime()) -> "Engine":
        """Open the index (a directory or a Milvus location) with its checkpoint (``model.pt`` in its home
        unless given), refusing one built with another model, and the checkpoint's embedder under ``runtime``
        (torch, or an ONNX model of that same checkpoint, see :func:`similarity.runtime.load_embedder`).
        Raises ``CheckpointError`` (``OnnxModelError`` among them) / ``IndexStoreError``."""
        store, ckpt = open_index(index, checkpoint)
        try:
            return cls(ckpt, store, load_embedder(ckpt, runtime), copy_checkpoint_of(store))
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    @property
    def model_info(self) -> dict:
        return self.checkpoint.model_info()

    @property
    def duplicate_checkpoint(self) -> Checkpoint:
        """The model whose vectors find duplicates: the copy descriptor where the index keeps one, else its model."""
        return self.copy_checkpoint or self.checkpoint

    @property
    def duplicate_rule(self) -> DuplicateRule:
        """The duplicate rule of :attr:`duplicate_checkpoint` and this index (:meth:`duplicate_rule_with`): what
        ingestion, ``index dedup`` and the report use unless given another."""
        return self.duplicate_rule_with()

    def duplicate_rule_with(self, **given: Any) -> DuplicateRule:
        """:func:`engine.duplicate_rule.rule_for` of :attr:`duplicate_checkpoint`, a copy descriptor's cosine raised
        to the index's calibrated cosine (:attr:`duplicate_calibration`); ``given``: values that win (``cosine``,
        ``descriptor_cosine``, ``phash_bits``, ...)."""
        return rule_for(self.duplicate_checkpoint, calibration=self.duplicate_calibration, **given)

    @property
    def duplicate_calibration(self) -> Calibration | None:
        """The calibrated cosine of :attr:`duplicate_space` (:func:`engine.duplicate_rule.calibrate`) for a copy
        descriptor, measured in this process when first asked; None for a class embedding."""
        return None if self._calibration is None else self._calibration.get()

    @property
    def duplicate_embedder(self) -> ImageEmbedder:
        """What runs :attr:`duplicate_checkpoint`."""
        return self.copy_embedder or self.embedder

    @property
    def duplicate_space(self):
        """Where duplicate candidates are searched: the copy descriptors' view (:mod:`index.descriptors`) where
        the index keeps one, else the store itself."""
        return self.store.descriptors or self.store

    def __len__(self) -> int:
        return len(self.store)

    # ------------------------------------------------------------------ the search path
    def embed(self, images: Sequence[ImageSource], *, names: Sequence[str] | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, request_pixels: int = DEFAULT_REQUEST_PIXELS) -> np.ndarray:
        """Decode and embed each image in turn (one decoded image in memory at a time): ``(n, d) float32``.

        Raises ``ImageDecodeError`` naming the image, or :class:`PixelBudgetExceeded` once the images
        decoded so far hold more than ``request_pixels`` pixels."""
        return self._embed_timed(images, names, max_pixels, request_pixels)[0]

    def _embed_timed(self, images: Sequence[ImageSource], names: Sequence[str] | None, max_pixels: int,
                     request_pixels: int) -> tuple[np.ndarray, float, float]:
        names = list(names) if names is not None else [f"images[{i}]" for i in range(len(images))]
        vectors, pixels, decode_s, embed_s = [], 0, 0.0, 0.0
        for source, name in zip(images, names, strict=True):
            started = time.perf_counter()
            image = _decode(source, name, max_pixels)
            pixels += image.width * image.height
            if pixels > request_pixels:
                raise PixelBudgetExceeded(f"the images of this request hold over {request_pixels} pixels in total "
                                          f"(reached at {name}); send fewer or smaller images")
            decoded = time.perf_counter()
            vectors.append(self.embedder.embed_images([image]))
            del image
            decode_s += decoded - started
            embed_s += time.perf_counter() - decoded
        xq = np.concatenate(vectors) if vectors else np.zeros((0, self.store.dim), np.float32)
        return xq, decode_s, embed_s

    def search(self, images: Sequence[ImageSource], *, k: int = 10, weighted: bool = False,
               unknown_below: float | None = None, names: Sequence[str] | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS, request_pixels: int = DEFAULT_REQUEST_PIXELS,
               label: str | None = None) -> list[SearchResult]:
        """Nearest ``k`` items and their majority vote for each image (a path, bytes or a file object);
        ``label``: only items of that class (the vote then only confirms it, with the neighbours' scores)."""
        if not len(images):
            raise ValueError("no image given")
        started = time.perf_counter()
        xq, decode_s, embed_s = self._embed_timed(images, names, max_pixels, request_pixels)
        embedded = time.perf_counter()
        hits = self.store.search(xq, k, label=label)
        searched = time.perf_counter()
        votes = [self.vote(h, weighted=weighted, unknown_below=unknown_below) for h in hits]
        done = time.perf_counter()
        timings = {"decode": _ms(decode_s), "embed": _ms(embed_s), "search": _ms(searched - embedded),
                   "vote": _ms(done - searched), "total": _ms(done - started)}
        return [SearchResult(h, v, weighted, timings) for h, v in zip(hits, votes)]

    @staticmethod
    def vote(neighbors: list[Neighbor], *, weighted: bool = False, unknown_below: float | None = None
             ) -> Vote | None:
        """The majority vote of the neighbours that carry a label; None when neighbours were found and none carries
        one (an unlabelled index: there is no class to vote for)."""
        labelled = [n for n in neighbors if n.label != NO_LABEL]
        if neighbors and not labelled:
            return None
        return majority_vote([n.label for n in labelled], [n.similarity for n in labelled], weighted=weighted,
                             unknown_below=unknown_below)

    def similar(self, item_id: int, *, k: int = 10, weighted: bool = False, unknown_below: float | None = None,
                label: str | None = None) -> tuple[ItemMeta, SearchResult] | None:
        """The ``k`` nearest other items of an indexed item (itself left out), or None if it is not live."""
        started = time.perf_counter()
        item = self.get(item_id)
        if item is None:
            return None
        try:
            xq = self.store.reconstruct(item.id).reshape(1, -1)
        except KeyError:  # deleted meanwhile
            return None
        hits = [n for n in self.store.search(xq, k + 1, label=label)[0] if n.id != item.id][:k]
        searched = time.perf_counter()
        vote = self.vote(hits, weighted=weighted, unknown_below=unknown_below)
        return item, SearchResult(hits, vote, weighted, {"search": _ms(searched - started),
                                                         "total": _ms(time.perf_counter() - started)})

    # ------------------------------------------------------------------ items
    def get(self, item_id: int) -> ItemMeta | None:
        """A live item's metadata, or None (also for ids out of range)."""
        return self.store.get(item_id) if 0 <= item_id < 2**63 else None

    def random_items(self, n: int, rng: np.random.Generator) -> list[ItemMeta]:
        ids = self.store.random_ids(n, rng)
        found = self.store.get_many(ids)
        return [found[int(i)] for i in ids if int(i) in found]

    def open_file(self, item: ItemMeta, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Decode an item's stored image file; raises ``ImageDecodeError`` if it is missing or unreadable."""
        return open_image(item.path, max_pixels=max_pixels)

    def is_upload(self, path: str) -> bool:
        """Whether ``path`` is a file of this index's ``uploads/`` folder (symlinks resolved)."""
        return os.path.realpath(os.path.dirname(path)) == os.path.realpath(self._uploads)

    # ------------------------------------------------------------------ writes
    def add_image(self, data: bytes, label: str = NO_LABEL, *, source: str = "upload",
                  max_pixels: int = DEFAULT_MAX_PIXELS, duplicates: str = DEFAULT_POLICY,
                  rule: DuplicateRule | None = None) -> AddResult:
        """Decode and embed an uploaded image, store its file under ``uploads/`` (written and fsynced with its
        folder), then add it in one durable transaction.  If the add fails the file is removed; if the
        process dies in between, :meth:`compact` removes the unreferenced file.

        ``duplicates`` (see :mod:`engine.ingestion`): ``flag`` adds it and names the indexed item it duplicates,
        ``skip`` adds nothing (no file written) when its pixels confirm it duplicates one (exact, hash, verified) and
        returns that item, ``keep`` adds it
        unchecked; ``rule``: default :attr:`duplicate_rule`.  ``label``: :data:`index.NO_LABEL` for an image without
        one.  Raises ``ValueError`` for another policy, ``ImageDecodeError`` for an unreadable image."""
        check_policy(duplicates)
        rule = rule if rule is not None else self.duplicate_rule
        image = _decode(data, "image", max_pixels)
        xb = self.embedder.embed_images([image])
        xd = self.copy_embedder.embed_images([image]) if self.copy_embedder is not None else None
        signals = functools.cache(lambda: ImageSignals.of_image(image, "upload"))  # only if a candidate needs it
        finding = None
        if duplicates != "keep":
            finding = find_in_store(self.duplicate_space, xb if xd is None else xd, lambda _row: signals(),
                                    rule=rule)[0]
        image = signals = None  # free the decoded pixels before the upload is written
        if finding is not None and duplicates == "skip" and finding.verdict.confirmed:
            existing = self.store.get(finding.duplicate_of)
            if existing is not None:  # else deleted since the search: add the upload after all
                logger.info("skipped an upload (%s): duplicates image %d", label, existing.id)
                return AddResult(existing, existing.id, finding.verdict, skipped=True)
        ext = upload_extension(data)
        path = self._write_upload(data, ext)
        try:
            ids = self.store.add(xb, labels=[label], paths=[path], sources=[source], descriptors=xd)
        except BaseException:
            _remove_quietly(path)
            raise
        item = self.store.get(int(ids[0]))
        if item is None:  # deleted by another writer in the instant since it committed
            item = ItemMeta(int(ids[0]), path, label, time.time(), source)
        else:
            logger.info("added image %d (%s) as %s", item.id, label, path)
        if finding is None:
            return AddResult(item)
        return AddResult(item, finding.duplicate_of, finding.verdict)

    def add_collection(self, data: LabelledImages, *, batch_size: int = 256, num_workers: int = 0,
                       progress: bool = True, source: str | None = None, duplicates: str = DEFAULT_POLICY,
                       rule: DuplicateRule | None = None
                       ) -> tuple[np.ndarray, list[SkippedFile], DuplicateCounts]:
        """Embed a collection of files (labelled or not) and add it in one transaction, under the ``duplicates``
        policy (against the index and within the collection; ``rule``: default :attr:`duplicate_rule`); returns
        (ids, skipped files, duplicate counts)."""
        return add_images(self.store, self.embedder, data, batch_size=batch_size, num_workers=num_workers,
                          progress=progress, source=source, duplicates=duplicates,
                          rule=rule if rule is not None else self.duplicate_rule, copy_embedder=self.copy_embedder)

    def delete(self, ids: Sequence[int]) -> list[ItemMeta]:
        """Delete items for good (durable when this returns); their uploaded files, if any, are removed."""
        gone = self.store.remove(list(ids))
        for item in gone:
            if self.is_upload(item.path):
                _remove_quietly(item.path)
        return gone

    def find_duplicates(self, *, rule: DuplicateRule | None = None, neighbours: int = DEFAULT_NEIGHBOURS,
                        pixels: bool = False, sample: int | None = None, seed: int = 0, confirm: bool = False,
                        progress: bool = False) -> DuplicateReport:
        """Duplicate groups of this index, found through its own search (see :mod:`engine.dedup`; ``sample``:
        search from that many seeded items only; ``confirm``: verify descriptor matches too); remove the
        confirmed members but the first of each group with ``delete(report.duplicates)``.  ``rule``: default
        :attr:`duplicate_rule`."""
        rule = rule if rule is not None else self.duplicate_rule
        return find_duplicates(self.duplicate_space, rule=rule, neighbours=neighbours, pixels=pixels, sample=sample,
                               seed=seed, confirm=confirm, progress=progress)

    def compact(self, *, force: bool = False, orphan_grace_s: float = ORPHAN_GRACE_S) -> dict:
        """Compact the index, then remove the upload files that no item references and that are older than
        ``orphan_grace_s`` (younger ones may belong to an add in flight).

        Returns ``{"backend", "index", "orphans_removed"}``.  ``index`` depends on the store: an index directory
        writes a snapshot of its FAISS index, rebuilt from the truth first when due or ``force``
        (:class:`index.CompactResult` as a dict, see ``IndexStore.compact``); Milvus compacts its own segments
        and is only asked to start now (``force`` changes nothing): ``{"requested": what, in words}``."""
        store = self.store
        if isinstance(store, Maintainable):
            index = store.compact(force=force).to_dict()
        elif isinstance(store, ServerCompacted):
            index = {"requested": store.request_compaction()}
        else:
            index = {"not_applicable": f"a {store.backend} index has no compaction"}
        return {"backend": store.backend, "index": index,
                "orphans_removed": self.remove_orphan_uploads(orphan_grace_s)}

    def log_head(self) -> int | None:
        """The seq of the index's newest committed change, or None where the store keeps no simsearch change
        log (Milvus keeps its own)."""
        return self.store.log_head() if isinstance(self.store, Maintainable) else None

    def compaction_due(self) -> bool:
        """Whether ``simsearch index compact`` would rebuild the index now (False where the store compacts
        itself, as Milvus does).  Serving processes never rebuild a large index on their own."""
        return isinstance(self.store, Maintainable) and bool(self.store.compaction_reason())

    def orphan_uploads(self) -> list[str]:
        """Files in ``uploads/`` that no live item references.  Matched by file name (each upload gets a
        fresh uuid name), so a directory reached through a symlink, moved or restored still matches."""
        if not os.path.isdir(self._uploads):
            return []
        names = set(os.listdir(self._uploads))
        referenced = {os.path.basename(item.path) for item in self.store.iter_items()} & names
        return sorted(names - referenced)

    def remove_orphan_uploads(self, grace_s: float = ORPHAN_GRACE_S) -> int:
        """Remove :meth:`orphan_uploads` older than ``grace_s`` (younger ones may belong to an add in flight,
        whose file is written before its transaction commits)."""
        cutoff = time.time() - grace_s
        removed = 0
        for name in self.orphan_uploads():
            path = os.path.join(self._uploads, name)
            try:
                if os.stat(path).st_mtime <= cutoff:
                    os.remove(path)
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            fsync_dir(self._uploads)
            logger.info("removed %d orphan upload file(s) from %s", removed, self._uploads)
        return removed

    def _write_upload(self, data: bytes, ext: str) -> str:
        path = os.path.join(self._uploads, uuid.uuid4().hex + ext)
        try:
            os.makedirs(self._uploads, exist_ok=True)
            atomic_write(path, data)
        except OSError as exc:  # a full or read-only disk: an index error, as SQLite's own would be
            raise storage_error(exc, f"writing the upload {path}") from None
        return path

    def stats(self) -> dict:
        """The store's stats, with items without a label counted apart (``unlabelled_items``) rather than under
        the empty label."""
        stats = self.store.stats()
        counts = stats["label_counts"]
        return {**stats, "label_counts": {label: n for label, n in counts.items() if label != NO_LABEL},
                "unlabelled_items": counts.get(NO_LABEL, 0)}


def make_rng(seed: int | None) -> np.random.Generator:
    """The random generator for :meth:`Engine.random_items` (``seed`` None: fresh entropy)."""
    return np.random.default_rng(seed)


def set_torch_threads(n: int) -> None:
    """Intra-op threads for embedding in this process (a server gives each worker a share of the cores)."""
    import torch

    torch.set_num_threads(n)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _decode(source: ImageSource, name: str, max_pixels: int) -> Image.Image:
    """:func:`open_image`, its error naming the image ``name`` instead of "upload"."""
    try:
        return open_image(source, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise ImageDecodeError(str(exc).replace("upload:", f"{name}:", 1)) from None


def upload_extension(data: bytes) -> str:
    """The file extension an image's bytes are stored under (``.img`` for a format not in UPLOAD_FORMATS)."""
    return UPLOAD_FORMATS.get(_sniff_format(data), (".img", None))[0]


def _sniff_format(data: bytes) -> str | None:
    """Pillow's name for the format of already-validated image bytes (reads the header only)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # noqa: BLE001 - open_image already accepted it; the name is only cosmetic
        return None


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass

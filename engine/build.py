"""Building and growing an index with a checkpoint.  An index's *home* holds a copy of the checkpoint
(``model.pt``, see :mod:`engine.layout`) and its uploads: for an index directory that is the directory itself
(self-contained); for a Milvus collection it is a folder every API server reaches, named in the collection.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from durablefile import atomic_path
from engine.duplicate_rule import COPIES_OBJECTIVE, MatrixSpace, calibrate, rule_for
from engine.ingestion import DuplicateCounts, apply_policy, check_policy, find_new_duplicates
from engine.layout import COPY_MODEL_FILE, MODEL_FILE, UPLOADS_DIR
from index import MODEL_FIELDS, NO_LABEL, IndexConfig, IndexStoreError, VectorStore
from index.location import create_store, default_home, is_milvus, open_store
from index.persist import check_model
from similarity.checkpoint import Checkpoint, load_checkpoint
from similarity.data import LabelledImages, SkippedFile
from similarity.embedder import EmbedResult, ImageEmbedder
from similarity.embedding_cache import EmbeddingCache
from similarity.hygiene import DuplicateRule
from similarity.runtime import EmbedRuntime, load_embedder

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    directory: str
    added: int
    skipped: list[SkippedFile] = field(default_factory=list)
    index_type: str = ""
    embed_seconds: float = 0.0
    images_per_second: float = 0.0
    duplicates: DuplicateCounts = field(default_factory=DuplicateCounts)


def checkpoint_for(home: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Checkpoint:
    """The checkpoint an index was built with (``home/model.pt``), or an explicit one."""
    path = Path(checkpoint) if checkpoint else Path(home) / MODEL_FILE
    return load_checkpoint(path)


def open_index(index: str | os.PathLike, checkpoint: str | os.PathLike | None = None
               ) -> tuple[VectorStore, Checkpoint]:
    """Open an index (a directory or a Milvus location) with its checkpoint (``model.pt`` in the index's home
    unless given), refusing a checkpoint other than the one it was built with (dim, preprocessing, weights)."""
    store = open_store(index)
    try:
        ckpt = checkpoint_for(store.home, checkpoint)
        check_model(store.model_info, index_model_info(ckpt))
    except BaseException:
        store.close()
        raise
    return store, ckpt


def copy_checkpoint_of(store: VectorStore) -> Checkpoint | None:
    """The copy descriptor whose vector every item of ``store`` carries beside its class embedding
    (``copy_model.pt`` in its home, checked against the index's record of it), or None for an index without."""
    space = store.descriptors
    if space is None:
        return None
    ckpt = load_checkpoint(Path(store.home) / COPY_MODEL_FILE)
    check_model(space.model_info, index_model_info(ckpt))
    return ckpt


def check_copy_checkpoint(checkpoint: Checkpoint, copy_checkpoint: Checkpoint) -> None:
    """``ValueError`` unless ``copy_checkpoint`` is a copy descriptor and ``checkpoint`` is not (an index built
    from a copy descriptor already searches with it: it needs no second one)."""
    if copy_checkpoint.objective != COPIES_OBJECTIVE:
        raise ValueError(f"--copy-model must be trained with --objective copies, got objective "
                         f"{copy_checkpoint.objective!r}")
    if checkpoint.objective == COPIES_OBJECTIVE:
        raise ValueError("the index's model is a copy descriptor already; build without --copy-model")


def check_index(index: str | os.PathLike) -> None:
    """Raise ``IndexStoreError`` saying why ``index`` is not a usable index (without its model)."""
    open_store(index).close()


def index_home(index: str | os.PathLike) -> str:
    """The folder of ``model.pt`` and uploads of an existing index (opens a Milvus collection to read it)."""
    if not is_milvus(index):
        return os.path.abspath(os.fspath(index))
    store = open_store(index)
    try:
        return store.home
    finally:
        store.close()


def index_model_info(checkpoint: Checkpoint) -> dict:
    info = checkpoint.model_info()
    return {key: info[key] for key in MODEL_FIELDS}


@dataclass(frozen=True)
class Embedded:
    """A collection embedded for an index: the rows ``kept`` (indices into it) with their class ``embeddings``
    ``(m, d) float32`` and, for an index that keeps a copy descriptor, their ``descriptors`` ``(m, d2) float32``."""

    kept: np.ndarray
    embeddings: np.ndarray
    descriptors: np.ndarray | None
    skipped: list[SkippedFile]

    def rows(self, rows: np.ndarray) -> "Embedded":
        return Embedded(self.kept[rows], self.embeddings[rows],
                        None if self.descriptors is None else self.descriptors[rows], self.skipped)

    @property
    def for_duplicates(self) -> np.ndarray:
        """The vectors duplicates are searched with: the copy descriptors where there are, else the embeddings."""
        return self.embeddings if self.descriptors is None else self.descriptors


def embed_collection(embedder: ImageEmbedder, copy_embedder: ImageEmbedder | None, data: LabelledImages, *,
                     batch_size: int = 256, num_workers: int = 0, progress: bool = True,
                     cache: EmbeddingCache | None = None) -> Embedded:
    """Embed ``data`` with the class model and, if given, the copy descriptor; a file either cannot read is left
    out of both."""
    first = embedder.embed_data(data, batch_size=batch_size, num_workers=num_workers, progress=progress, cache=cache)
    if copy_embedder is None:
        return Embedded(first.kept, first.embeddings, None, first.skipped)
    second = copy_embedder.embed_data(data, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                      cache=cache)
    kept = np.intersect1d(first.kept, second.kept)
    seen = {f.path for f in first.skipped}
    skipped = first.skipped + [s for s in second.skipped if s.path not in seen]
    return Embedded(kept, _rows_of(first, kept), _rows_of(second, kept), skipped)


def _rows_of(result: EmbedResult, kept: np.ndarray) -> np.ndarray:
    """``result``'s vectors of the indices ``kept`` (a subset of ``result.kept``), in that order."""
    position = {int(i): row for row, i in enumerate(result.kept.tolist())}
    return result.embeddings[[position[int(i)] for i in kept.tolist()]]


def add_images(store: VectorStore, embedder: ImageEmbedder, data: LabelledImages, *, batch_size: int = 256,
               num_workers: int = 0, progress: bool = True, source: str | None = None, duplicates: str = "keep",
               rule: DuplicateRule = DuplicateRule(), copy_embedder: ImageEmbedder | None = None
               ) -> tuple[np.ndarray, list[SkippedFile], DuplicateCounts]:
    """Embed ``data`` (file-backed; with ``copy_embedder`` too, for an index that keeps a copy descriptor) and
    append it to ``store`` under the ``duplicates`` policy (against the index and within the batch, see
    :mod:`engine.ingestion`); returns (new ids, skipped files, duplicate counts)."""
    check_policy(duplicates)
    _require_files(data)
    embedded = embed_collection(embedder, copy_embedder, data, batch_size=batch_size, num_workers=num_workers,
                                progress=progress)
    embedded, counts = _screen(store, data, embedded, duplicates, rule)
    return _append(store, data, embedded, source), embedded.skipped, counts


def _screen(store: VectorStore | None, data: LabelledImages, embedded: Embedded, policy: str,
            rule: DuplicateRule) -> tuple[Embedded, DuplicateCounts]:
    """The rows of ``embedded`` to store under ``policy``, and the duplicate counts.  Candidates come from the
    copy descriptors' own view where the index keeps them (:mod:`index.descriptors`)."""
    if policy == "keep" or not len(embedded.kept):
        return embedded, DuplicateCounts()
    assert data.paths is not None
    space = None if store is None else (store.descriptors or store)
    findings = find_new_duplicates(space, embedded.for_duplicates,
                                   [os.path.abspath(data.paths[i]) for i in embedded.kept], rule=rule)
    rows, counts = apply_policy(findings, policy)
    log.info("duplicates at ingestion (%s): %d exact, %d near", policy, counts.exact, counts.near)
    return embedded.rows(rows), counts


def _require_files(data: LabelledImages) -> None:
    if data.paths is None:
        raise ValueError("indexing needs image files (the API serves them); export in-memory images with "
                         "similarity.data.export_to_folder")


def _append(store: VectorStore, data: LabelledImages, embedded: Embedded, source: str | None = None) -> np.ndarray:
    """Add ``embedded``'s rows of ``data`` with their labels (:data:`index.NO_LABEL` for an unlabelled collection)
    and absolute paths; returns ids."""
    kept = embedded.kept
    if not len(kept):
        return np.zeros(0, np.int64)
    assert data.paths is not None
    labels = [data.class_names[data.labels[i]] for i in kept] if data.labelled else [NO_LABEL] * len(kept)
    return store.add(embedded.embeddings, labels=labels,
                     paths=[os.path.abspath(data.paths[i]) for i in kept],
                     sources=[source or data.source] * len(kept), descriptors=embedded.descriptors)


def build_index(checkpoint_path: str | os.PathLike, data: LabelledImages, out: str | os.PathLike, *,
                config: IndexConfig = IndexConfig(), batch_size: int = 256, num_workers: int = 0,
                progress: bool = True, home: str | os.PathLike | None = None, duplicates: str = "flag",
                rule: DuplicateRule | None = None, runtime: EmbedRuntime = EmbedRuntime(),
                copy_checkpoint_path: str | os.PathLike | None = None) -> BuildSummary:
    """Embed every image of ``data`` (labelled or not) with the checkpoint and write a new index: a directory, or a
    Milvus collection whose ``model.pt`` and uploads go to ``home`` (default: :func:`index.location.default_home`).
    ``duplicates``: the policy for duplicates within ``data`` (see :mod:`engine.ingestion`) under ``rule`` (default:
    the checkpoint's, :func:`engine.duplicate_rule.rule_for`); ``runtime``: what runs the model (see
    :func:`similarity.runtime.load_embedder`); ``copy_checkpoint_path``: a copy descriptor whose vector every item
    carries too (``copy_model.pt``; an index directory only), which then finds the duplicates and sets the rule."""
    import time

    check_policy(duplicates)
    _require_files(data)
    milvus = is_milvus(out)
    home_dir = Path(os.fspath(home) if (home and milvus) else default_home(out))
    if home is not None and not milvus and home_dir.resolve() != Path(home).resolve():
        raise ValueError("--home applies to Milvus indexes only: an index directory is its own home")
    if not milvus and home_dir.exists() and any(home_dir.iterdir()):
        raise FileExistsError(f"{home_dir} exists and is not empty; choose a new directory or delete it")
    checkpoint = load_checkpoint(checkpoint_path)
    copy_checkpoint = copy_embedder = None
    if copy_checkpoint_path is not None:
        if milvus:
            raise ValueError("a copy descriptor beside the class embedding needs an index directory: a Milvus "
                             "collection keeps one vector per item (build the index from the copy model alone)")
        copy_checkpoint = load_checkpoint(copy_checkpoint_path)
        check_copy_checkpoint(checkpoint, copy_checkpoint)
        copy_embedder = copy_checkpoint.embedder()
    embedder = load_embedder(checkpoint, runtime)  # a bad ONNX file fails before anything is written
    if milvus:  # refuse an existing collection before spending minutes embedding
        from index.location import parse_location
        from index.milvus import MilvusStore

        location = parse_location(os.fspath(out))
        if MilvusStore.exists(location):
            raise FileExistsError(f"{location.display} already exists; drop it (simsearch index drop) or pick "
                                  "another collection")
    home_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(home_dir / MODEL_FILE) as tmp:
        shutil.copyfile(checkpoint_path, tmp)
    if copy_checkpoint_path is not None:
        with atomic_path(home_dir / COPY_MODEL_FILE) as tmp:
            shutil.copyfile(copy_checkpoint_path, tmp)
    started = time.perf_counter()
    embedded = embed_collection(embedder, copy_embedder, data, batch_size=batch_size, num_workers=num_workers,
                                progress=progress, cache=EmbeddingCache.from_environment())
    seconds = time.perf_counter() - started
    if rule is None:  # the rule the index will have: a copy descriptor's cosine calibrated on the collection
        duplicates_by = copy_checkpoint or checkpoint
        rule = rule_for(duplicates_by)
        if duplicates != "keep" and duplicates_by.objective == COPIES_OBJECTIVE and len(embedded.kept):
            assert data.paths is not None
            collection = MatrixSpace(embedded.for_duplicates, [data.paths[i] for i in embedded.kept])
            rule = rule_for(duplicates_by, calibration=calibrate(collection, rule))
    embedded, counts = _screen(None, data, embedded, duplicates, rule)
    if config.expected_size is None:
        config = replace(config, expected_size=max(1, len(embedded.kept)))
    store = create_store(os.fspath(out), checkpoint.config.model.embedding_dim, config=config,
                         model_info=index_model_info(checkpoint), home=str(home_dir) if milvus else None,
                         descriptor_model=None if copy_checkpoint is None else index_model_info(copy_checkpoint))
    try:
        _append(store, data, embedded)
        if milvus:
            store.flush()  # seal the segments: a server restart does not replay them
        else:
            store.snapshot()  # so that opening loads the FAISS index instead of replaying the whole log
        index_type = store.index_type or ""
        location = store.location
    finally:
        store.close()
    return BuildSummary(location, len(embedded.kept), embedded.skipped, index_type,
                        seconds, len(data) / seconds if seconds else 0.0, counts)


def copy_index(source: str | os.PathLike, target: str | os.PathLike, *, home: str | os.PathLike | None = None,
               index_type: str | None = None, progress: bool = True) -> dict:
    """Copy an index (any store) into a new Milvus collection: ids, labels, sources and vectors are kept and
    nothing is re-embedded; ``model.pt`` and uploaded images are copied into the target's home (upload paths
    rewritten there), other image paths are kept as they are."""
    from tqdm import tqdm

    from index.location import parse_location

    if parse_location(os.fspath(target)) is None:
        raise ValueError(f"the copy's target must be a Milvus collection (milvus://HOST:PORT/COLLECTION or "
                         f"PATH.db), got {os.fspath(target)!r}")
    src = open_store(source)
    try:
        if src.descriptors is not None:
            log.warning("%s keeps a copy descriptor per item; the collection keeps one vector per item and finds "
                        "duplicates with the class model", source)
        home_dir = Path(os.fspath(home) if home else default_home(target))
        model = Path(src.home) / MODEL_FILE
        if not model.is_file():
            raise FileNotFoundError(f"{source} has no {MODEL_FILE} in {src.home}")
        config = replace(src.config, index_type=index_type or src.index_type or src.config.index_type,
                         expected_size=max(1, len(src)))
        dst = create_store(os.fspath(target), src.dim, config=config, model_info=src.model_info, home=str(home_dir))
        try:
            home_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(home_dir / MODEL_FILE) as tmp:
                shutil.copyfile(model, tmp)
            uploads_from = os.path.realpath(os.path.join(src.home, UPLOADS_DIR))
            uploads_to = home_dir.resolve() / UPLOADS_DIR

            def move_upload(path: str) -> str:
                if os.path.realpath(os.path.dirname(path)) != uploads_from or not os.path.isfile(path):
                    return path
                uploads_to.mkdir(exist_ok=True)
                copied = uploads_to / os.path.basename(path)
                with atomic_path(copied) as tmp:
                    shutil.copyfile(path, tmp)
                return str(copied)

            bar = tqdm(total=len(src), unit="item", desc="copy", disable=not progress)
            copied = copy_items(src, dst, progress=bar.update, path_map=move_upload)
            bar.close()
            dst.flush()
            location = dst.location
        finally:
            dst.close()
    finally:
        src.close()
    return {"source": os.fspath(source), "index": location, "home": str(home_dir), "copied": copied}


def copy_items(source: VectorStore, target, *, batch: int = 10_000, progress=None, path_map=None) -> int:
    """Copy every item of ``source`` (any store) into ``target`` (a :class:`index.milvus.MilvusStore`), keeping
    ids, labels, paths (through ``path_map`` if given), sources and vectors (no re-embedding); returns the number
    copied.  ``progress(n)`` is called after each batch."""
    if source.dim != target.dim:
        raise IndexStoreError(f"cannot copy {source.dim}-d vectors into a {target.dim}-d collection")
    copied, seen = 0, []
    for chunk, vectors in source.iter_vectors(batch):  # one chunk in memory at a time
        metas = source.get_many(chunk)
        keep = [i for i, item_id in enumerate(chunk) if int(item_id) in metas]
        rows = [metas[int(chunk[i])] for i in keep]
        paths = [path_map(m.path) if path_map else m.path for m in rows]
        target.add(vectors[keep], labels=[m.label for m in rows], paths=paths,
                   sources=[m.source or "" for m in rows], ids=chunk[keep], added_at=[m.added_at for m in rows])
        seen.append(chunk)
        copied += len(rows)
        if progress:
            progress(len(rows))
    if seen:  # so that random_ids samples the copied id range without a scan
        target.record_import(np.concatenate(seen))
    return copied


def drop_index(target: str | os.PathLike) -> bool:
    """Drop a Milvus collection (an index directory is removed with ``rm -r``); returns whether it existed."""
    from index.location import parse_location
    from index.milvus import MilvusStore

    location = parse_location(os.fspath(target))
    if location is None:
        raise ValueError(f"{os.fspath(target)!r} is not a Milvus collection; an index directory is deleted with rm -r")
    return MilvusStore.drop(location)

"""Glue for reports: gather an index's embeddings and a set of held-out queries, then call
:func:`report.build_report`. The report is written into ``<index>/report/`` by default, where the
API serves it at ``GET /report``."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from index import NO_LABEL
from report import EmbeddingSet, ReportConfig, ReportResult, build_report
from report.config import NO_LABEL_NAME
from report.hygiene import LeakNeighbours
from report.duplicates import write_duplicates  # noqa: F401  (the CLI writes `index dedup` listings through here)
from similarity.checkpoint import Checkpoint
from similarity.data import LabelledImages, fashion_mnist_folder, load_labelled_images
from similarity.embedding_cache import EmbeddingCache
from similarity.runtime import EmbedRuntime
from engine.dedup import DEFAULT_NEIGHBOURS
from engine.engine import Engine
from engine.layout import REPORT_DIR

log = logging.getLogger(__name__)


def held_out_queries(checkpoint: Checkpoint, which: str | None) -> LabelledImages | None:
    """The query images for a report.

    ``None``: no queries (leave-one-out inside the index). ``"test"``: the held-out test split the
    checkpoint recorded (Fashion-MNIST: its official 10k test set). Anything else: a folder or CSV.
    """
    if which is None:
        return None
    if which != "test":
        return load_labelled_images(which, min_per_class=1)  # queries need no pairs
    source = checkpoint.extra.get("data_source", "")
    if source.startswith("fashion-mnist"):
        return fashion_mnist_folder("test")
    test = checkpoint.extra.get("split", {}).get("test", [])
    if not test:
        raise ValueError("the checkpoint recorded no test split (train with --test-fraction, or pass "
                         "--queries FOLDER)")
    data = load_labelled_images(source)
    return data.subset(np.asarray(test))


def index_embeddings(store, class_names: list[str]) -> EmbeddingSet:
    """Every live item of ``store`` as an :class:`EmbeddingSet`, the checkpoint's ``class_names`` first; an item
    without a label is of the class :data:`report.config.NO_LABEL_NAME`."""
    ids, vectors = store.all_vectors()
    items = {item.id: item for item in store.iter_items()}
    labels_text = [items[int(i)].label or NO_LABEL_NAME for i in ids]
    names = list(class_names) + sorted(set(labels_text) - set(class_names))
    lookup = {name: i for i, name in enumerate(names)}
    return EmbeddingSet(embeddings=vectors, labels=np.array([lookup[t] for t in labels_text], dtype=np.int64),
                        class_names=names, paths=[items[int(i)].path for i in ids], ids=ids)


def descriptor_neighbours(engine: Engine, queries: LabelledImages, kept: np.ndarray, gallery: EmbeddingSet, *,
                          k: int = DEFAULT_NEIGHBOURS, progress: bool = False) -> LeakNeighbours:
    """The nearest ``gallery`` rows of each query row ``kept`` by the index's copy descriptor (its own view, as
    ``index dedup`` searches it); a query the copy model could not read has none."""
    result = engine.copy_embedder.embed_data(queries, progress=progress)
    row_of = {int(i): row for row, i in enumerate(result.kept.tolist())}
    gallery_row = {int(i): row for row, i in enumerate(gallery.ids.tolist())}
    indices = np.zeros((len(kept), k), dtype=np.int64)
    similarities = np.full((len(kept), k), -np.inf, dtype=np.float32)
    found = [row_of.get(int(i)) for i in kept.tolist()]
    readable = [q for q, row in enumerate(found) if row is not None]
    if readable:
        hits = engine.store.descriptors.search(result.embeddings[[found[q] for q in readable]], k)
        for q, row in zip(readable, hits):
            inside = [(gallery_row[h.id], h.similarity) for h in row if h.id in gallery_row]  # not a query itself
            for column, (g, similarity) in enumerate(inside):
                indices[q, column], similarities[q, column] = g, similarity
    return LeakNeighbours(indices, similarities)


def without_paths(gallery: EmbeddingSet, paths: set[str]) -> EmbeddingSet:
    """The gallery minus items whose file is one of the queries: a held-out query must not find itself."""
    if not paths or gallery.paths is None:
        return gallery
    keep = np.array([os.path.abspath(p) not in paths for p in gallery.paths])
    if keep.all():
        return gallery
    log.info("leaving %d query images out of the gallery", int((~keep).sum()))
    return EmbeddingSet(embeddings=gallery.embeddings[keep], labels=gallery.labels[keep],
                        class_names=gallery.class_names, paths=[p for p, k in zip(gallery.paths, keep) if k],
                        ids=gallery.ids[keep] if gallery.ids is not None else None)


def report_for_index(index_dir: str | os.PathLike, *, checkpoint: str | None = None, queries: str | None = "test",
                     out_dir: str | os.PathLike | None = None, config: ReportConfig = ReportConfig(),
                     progress: bool = True, runtime: EmbedRuntime = EmbedRuntime()) -> ReportResult:
    """``runtime``: what embeds the queries (see :func:`similarity.runtime.load_embedder`)."""
    engine = Engine.open(index_dir, checkpoint, runtime=runtime)
    try:
        return _report(engine, queries, out_dir, config, progress)
    finally:
        engine.close()


def _report(engine: Engine, queries: str | None, out_dir: str | os.PathLike | None, config: ReportConfig,
            progress: bool) -> ReportResult:
    ckpt, store = engine.checkpoint, engine.store
    if config.duplicates is None:
        config = replace(config, duplicates=engine.duplicate_rule)
    labelled = any(label != NO_LABEL for label in store.label_counts())
    gallery = index_embeddings(store, ckpt.class_names if labelled else [])
    if not labelled and queries is not None:
        log.info("the index has no labels: the report has no class metrics and searches no queries (%s)", queries)
        queries = None
    query_data = held_out_queries(ckpt, queries)
    query_set = leak_neighbours = None
    if query_data is not None:
        result = engine.embedder.embed_data(query_data, progress=progress, cache=EmbeddingCache.from_environment())
        lookup = {name: i for i, name in enumerate(gallery.class_names)}
        unknown = sorted(set(query_data.class_names) - set(lookup))
        if unknown:
            raise ValueError(f"query classes not in the index: {', '.join(unknown)}")
        remap = np.array([lookup[name] for name in query_data.class_names])
        gallery = without_paths(gallery, {os.path.abspath(query_data.paths[i]) for i in result.kept}
                                if query_data.paths else set())
        query_set = EmbeddingSet(embeddings=result.embeddings, labels=remap[query_data.labels[result.kept]],
                                 class_names=gallery.class_names,
                                 paths=[query_data.paths[i] for i in result.kept] if query_data.paths else None)
        if engine.copy_embedder is not None:  # leaks are copies: found, as the gallery's groups, by the descriptor
            leak_neighbours = descriptor_neighbours(engine, query_data, result.kept, gallery, progress=progress)
    stats = store.stats()
    info = {"gallery_items": len(gallery), "model": {"backbone": ckpt.config.model.backbone, "embedding_dim": ckpt.config.model.embedding_dim,
                      "loss": ckpt.config.loss.name, "sampler": ckpt.config.sampler.kind,
                      "checkpoint_sha256": ckpt.sha256[:16], "trained_on": ckpt.extra.get("data_source", ""),
                      "best_epoch": ckpt.metrics.get("best_epoch")},
            "index": {"type": stats["index_type"], "items": stats["ntotal"], "directory": engine.directory},
            "queries": (str(queries) if queries else "leave-one-out within the index") if labelled else
            "none: the images have no labels"}
    groups = None
    if config.hygiene:
        duplicates = engine.find_duplicates(rule=config.duplicates, pixels=True, sample=config.hygiene_sample,
                                            seed=config.seed, progress=progress)
        groups = [group.to_dict() for group in duplicates.groups]
        info["duplicate_search_s"] = round(duplicates.seconds, 2)
        info["duplicate_search_items"] = duplicates.summary()["queried"]
    out = Path(out_dir) if out_dir else Path(engine.directory) / REPORT_DIR
    return build_report(gallery, query_set, out, config=config, info=info, history=ckpt.history,
                        progress=progress, duplicate_groups=groups, start=(ckpt.metrics or {}).get("start"),
                        labelled=labelled, leak_neighbours=leak_neighbours)

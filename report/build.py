"""Build the whole report from embeddings: numbers, figures, ``report.html`` and ``report.json``.

Inputs are arrays (:class:`EmbeddingSet`); loading a checkpoint or an index is the caller's job.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from report import figures as figs
from report.classification import class_confusion, most_confused_pairs, per_class_accuracy
from report.cluster import cluster_quality
from report.config import HTML_FILE, JSON_FILE, EmbeddingSet, ReportConfig, ReportResult
from report.examples import choose_examples, example_rows, render_grid
from report.html import render_html, tsne_payload
from report.hygiene import find_leaks, hygiene_metrics, hygiene_rows
from report.thumbnails import png_data_uri, thumbnail_uris
from report.tsne import tsne_map
from similarity.metrics import retrieval_summary, score_queries

log = logging.getLogger(__name__)

STEPS = ("retrieval", "cluster quality", "t-SNE", "thumbnails", "figures", "examples", "hygiene", "write")


def build_report(gallery: EmbeddingSet, queries: EmbeddingSet | None, out_dir: str | Path, *,
                 config: ReportConfig = ReportConfig(), info: Mapping[str, Any] | None = None,
                 history: list[dict] | None = None, progress: bool = True,
                 title: str = "simsearch embedding report",
                 duplicate_groups: Sequence[Mapping] | None = None,
                 start: Mapping[str, Any] | None = None) -> ReportResult:
    """Evaluate ``queries`` against ``gallery`` (leave-one-out within the gallery when ``queries`` is None)
    and write ``report.html``, ``report.json`` and the figures' PNGs into ``out_dir``.

    Cluster quality and the t-SNE map use the held-out queries when given, else the gallery.
    ``info``: model/index facts to show (str -> scalar or nested dict). ``history``: per-epoch dicts
    for the training curves. ``duplicate_groups``: the gallery's duplicate groups as
    ``engine.dedup.DuplicateGroup.to_dict()`` dicts, for the data-hygiene section (None: not searched).
    ``start``: the trained model against its starting point (the checkpoint's ``metrics["start"]``), shown in the
    summary. Returns the paths and the metrics (as written to ``report.json``).
    """
    _check_compatible(gallery, queries)
    with threadpool_limits(limits=config.threads):
        return _build(gallery, queries, Path(out_dir), config=config, info=info, history=history, start=start,
                      progress=progress, title=title, groups=duplicate_groups)


def _build(gallery: EmbeddingSet, queries: EmbeddingSet | None, out: Path, *, config: ReportConfig,
           info: Mapping[str, Any] | None, history: list[dict] | None, progress: bool, title: str,
           groups: Sequence[Mapping] | None, start: Mapping[str, Any] | None = None) -> ReportResult:
    out.mkdir(parents=True, exist_ok=True)
    evaluated = queries if queries is not None else gallery
    mode = "queries" if queries is not None else "leave_one_out"
    names = gallery.class_names
    rng = np.random.default_rng(config.seed)
    timings: dict[str, float] = {}
    bar = tqdm(total=len(STEPS), desc="report", unit="step", disable=not progress)

    @contextmanager
    def step(name: str) -> Iterator[None]:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - start, 3)
        log.info("report step %s: %.2f s", name, timings[name])
        bar.update()

    with step("retrieval"):
        scores = score_queries(evaluated.embeddings, evaluated.labels,
                               None if queries is None else gallery.embeddings,
                               None if queries is None else gallery.labels,
                               keep=config.neighbors_kept, chunk_elements=config.chunk_elements, progress=progress)
        retrieval, predicted = retrieval_summary(scores, evaluated.labels, gallery.labels, k=config.k,
                                                 recall_at=config.recall_at, num_classes=len(names))
        confusion = class_confusion(evaluated.labels, predicted, len(names))
        accuracy = per_class_accuracy(confusion)
    with step("cluster quality"):
        cluster = cluster_quality(evaluated.embeddings, evaluated.labels, seed=config.seed,
                                  silhouette_sample=config.silhouette_sample, kmeans_sample=config.kmeans_sample)
    with step("t-SNE"):
        tsne = tsne_map(evaluated.embeddings, sample=config.tsne_sample, perplexity=config.tsne_perplexity,
                        pca_dims=config.pca_dims, max_iter=config.tsne_max_iter, seed=config.seed)
    with step("thumbnails"):
        thumbs: list[str | None] = [None] * len(tsne.rows)
        if evaluated.paths is not None and config.hover_thumbnails:
            chosen = np.sort(rng.choice(len(tsne.rows), size=min(config.hover_thumbnails, len(tsne.rows)),
                                        replace=False))
            uris = thumbnail_uris([evaluated.paths[tsne.rows[i]] for i in chosen], config.thumbnail_size,
                                  progress=progress)
            for i, uri in zip(chosen, uris):
                thumbs[i] = uri
    with step("figures"):
        overall_accuracy = next(v for name, v in retrieval.items() if name.startswith("knn_accuracy@"))
        pngs: dict[str, bytes] = {
            "tsne": figs.tsne_figure(tsne.coords, evaluated.labels[tsne.rows], names),
            "confusion": figs.confusion_figure(confusion, names),
            "per_class_accuracy": figs.per_class_figure(accuracy, names, overall_accuracy),
        }
        if any(row.get("epoch", 1) > 0 for row in history or []):
            pngs["training_curves"] = figs.training_figure([row for row in history if row.get("epoch", 1) > 0])
    with step("examples"):
        shown = config.neighbors_shown
        random_rows, failure_rows = choose_examples(gallery.labels[scores.indices[:, :shown]],
                                                    scores.similarities[:, :shown], evaluated.labels,
                                                    examples=config.examples, failures=config.failures, rng=rng)
        sections = []
        for heading, rows in (("Random queries", random_rows), ("Worst failures (neighbors mostly wrong)",
                                                                failure_rows)):
            if len(rows):
                sections.append((heading, example_rows(evaluated, gallery, rows, scores.indices[:, :shown],
                                                       scores.similarities[:, :shown],
                                                       tile=max(config.thumbnail_size, 48))))
        pngs["examples"] = render_grid(sections, tile=max(config.thumbnail_size, 48))
    with step("hygiene"):
        leaks = None if queries is None else find_leaks(queries, gallery, scores, config.duplicates)
        hygiene = hygiene_metrics(leaks, predicted, evaluated.labels, config.duplicates, groups,
                                  queries=len(evaluated))
        hygiene_html = hygiene_rows(leaks or [], groups or [], evaluated, gallery, shown=config.hygiene_shown,
                                    size=max(config.thumbnail_size, 48))

    metrics: dict[str, Any] = {
        "counts": {"gallery": len(gallery), "queries": len(evaluated), "classes": len(names),
                   "dim": int(gallery.embeddings.shape[1]), "mode": mode},
        "retrieval": retrieval,
        "per_class": [{"class": c, "name": names[c], "queries": int(confusion[c].sum()),
                       "accuracy": float(accuracy[c])} for c in range(len(names))],
        "confusion_matrix": confusion.tolist(),
        "confused_pairs": most_confused_pairs(confusion, names, config.confused_pairs),
        "cluster": cluster,
        "cluster_set": "queries" if queries is not None else "gallery",
        "tsne": {"points": len(tsne.rows), "set": "queries" if queries is not None else "gallery",
                 "perplexity": tsne.perplexity, "hover_thumbnails": sum(t is not None for t in thumbs)},
        "examples": {"random": [evaluated.name_of(i) for i in random_rows],
                     "failures": [evaluated.name_of(i) for i in failure_rows]},
        "hygiene": hygiene,
        "against_start": dict(start) if start else None,
        "timings_s": timings,
    }
    with step("write"):
        figure_paths = {}
        for name, png in pngs.items():
            figure_paths[name] = out / f"{name}.png"
            figure_paths[name].write_bytes(png)
        metrics = _json_safe(metrics)
        html = render_html(
            title=title, subtitle=f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}", metrics=metrics,
            figures={name: png_data_uri(png) for name, png in pngs.items()},
            tsne_json=tsne_payload(tsne.coords, evaluated.labels[tsne.rows],
                                   [evaluated.name_of(i) for i in tsne.rows], thumbs, names,
                                   figs.class_colours(len(names))),
            info=info, settings=config.to_dict(), hygiene=hygiene_html)
        html_path, json_path = out / HTML_FILE, out / JSON_FILE
        html_path.write_text(html, encoding="utf-8")
        document = _json_safe({"title": title, "config": config.to_dict(), "info": dict(info or {}),
                               "history": list(history or []), "metrics": metrics,
                               "files": {name: path.name for name, path in figure_paths.items()}})
        json_path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    bar.close()
    metrics["timings_s"] = timings  # now including "write"
    log.info("report written to %s", html_path)
    return ReportResult(html_path=html_path, json_path=json_path, figures=figure_paths, metrics=metrics)


def _check_compatible(gallery: EmbeddingSet, queries: EmbeddingSet | None) -> None:
    if queries is None:
        if len(gallery) < 2:
            raise ValueError(f"leave-one-out needs at least 2 gallery items, got {len(gallery)}")
        return
    if queries.class_names != gallery.class_names:
        raise ValueError(f"queries and gallery have different class_names: {queries.class_names} vs "
                         f"{gallery.class_names}")
    if queries.embeddings.shape[1] != gallery.embeddings.shape[1]:
        raise ValueError(f"query dim {queries.embeddings.shape[1]} != gallery dim {gallery.embeddings.shape[1]}")


def _json_safe(value: Any) -> Any:
    """numpy scalars/arrays to Python, NaN/inf to None, recursively (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

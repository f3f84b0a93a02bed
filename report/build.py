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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from durablefile import atomic_write
from report import figures as figs
from report.classification import class_confusion, most_confused_pairs, per_class_accuracy
from report.cluster import cluster_quality
from report.config import HTML_FILE, JSON_FILE, UNLABELLED_NOTE, EmbeddingSet, ReportConfig, ReportResult
from report.examples import choose_examples, example_rows, render_grid
from report.html import render_html, tsne_payload
from report.hygiene import LeakNeighbours, find_leaks, hygiene_metrics, hygiene_rows
from report.thumbnails import png_data_uri, thumbnail_uris
from report.tsne import TsneMap, tsne_map
from similarity.hygiene import DuplicateRule
from similarity.metrics import QueryScores, retrieval_summary, score_queries

log = logging.getLogger(__name__)

STEPS = ("retrieval", "cluster quality", "t-SNE", "thumbnails", "figures", "examples", "hygiene", "write")


def build_report(gallery: EmbeddingSet, queries: EmbeddingSet | None, out_dir: str | Path, *,
                 config: ReportConfig = ReportConfig(), info: Mapping[str, Any] | None = None,
                 history: list[dict] | None = None, progress: bool = True,
                 title: str = "simsearch embedding report",
                 duplicate_groups: Sequence[Mapping] | None = None,
                 start: Mapping[str, Any] | None = None, labelled: bool = True,
                 leak_neighbours: LeakNeighbours | None = None) -> ReportResult:
    """Evaluate ``queries`` against ``gallery`` (leave-one-out within the gallery when ``queries`` is None)
    and write ``report.html``, ``report.json`` and the figures' PNGs into ``out_dir``.

    Cluster quality and the t-SNE map use the held-out queries when given, else the gallery.
    ``info``: model/index facts to show (str -> scalar or nested dict). ``history``: per-epoch dicts
    for the training curves. ``duplicate_groups``: the gallery's duplicate groups as
    ``engine.dedup.DuplicateGroup.to_dict()`` dicts, for the data-hygiene section (None: not searched).
    ``start``: the trained model against its starting point (the checkpoint's ``metrics["start"]``), shown in the
    summary. ``labelled`` False: the gallery's images have no labels (one class, :data:`NO_LABEL_NAME`); the report
    then holds the t-SNE map in one colour, the duplicate groups and the training curves, no class metrics and no
    queries (:data:`UNLABELLED_NOTE` says why). ``leak_neighbours``: the queries' candidates for the leak check by
    a copy descriptor (default: their neighbours by these embeddings). Returns the paths and the metrics (as
    written to ``report.json``).
    """
    _check_compatible(gallery, queries)
    if config.duplicates is None:
        config = replace(config, duplicates=DuplicateRule())
    with threadpool_limits(limits=config.threads):
        if not labelled:
            return _build_unlabelled(gallery, Path(out_dir), config=config, info=info, history=history,
                                     progress=progress, title=title, groups=duplicate_groups)
        return _build(gallery, queries, Path(out_dir), config=config, info=info, history=history, start=start,
                      progress=progress, title=title, groups=duplicate_groups, leak_neighbours=leak_neighbours)


class _Steps:
    """The progress bar over :data:`STEPS` and the seconds each took (``timings``, in the order run)."""

    def __init__(self, progress: bool) -> None:
        self.timings: dict[str, float] = {}
        self._bar = tqdm(total=len(STEPS), desc="report", unit="step", disable=not progress)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._bar.set_postfix_str(name)
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 3)
        log.info("report step %s: %.2f s", name, self.timings[name])
        self._bar.update()

    def close(self) -> None:
        self._bar.close()


@dataclass(frozen=True)
class _Retrieval:
    """The search step: ``scores`` of every evaluated item, ``summary`` (retrieval numbers), ``predicted``:
    (nq,) kNN labels, ``confusion``: (c, c) counts, ``accuracy``: (c,) per-class kNN accuracy."""

    scores: QueryScores
    summary: dict[str, float]
    predicted: np.ndarray
    confusion: np.ndarray
    accuracy: np.ndarray


def _build(gallery: EmbeddingSet, queries: EmbeddingSet | None, out: Path, *, config: ReportConfig,
           info: Mapping[str, Any] | None, history: list[dict] | None, progress: bool, title: str,
           groups: Sequence[Mapping] | None, start: Mapping[str, Any] | None = None,
           leak_neighbours: LeakNeighbours | None = None) -> ReportResult:
    """Run the :data:`STEPS` in order (the RNG is drawn from by the thumbnails, then by the examples)."""
    out.mkdir(parents=True, exist_ok=True)
    evaluated = queries if queries is not None else gallery
    rng = np.random.default_rng(config.seed)
    steps = _Steps(progress)
    with steps("retrieval"):
        found = _retrieve(gallery, queries, config, progress)
    with steps("cluster quality"):
        cluster = cluster_quality(evaluated.embeddings, evaluated.labels, seed=config.seed,
                                  silhouette_sample=config.silhouette_sample, kmeans_sample=config.kmeans_sample)
    tsne, thumbs = _map(evaluated, config, rng, progress, steps)
    with steps("figures"):
        pngs = _figures(evaluated, tsne, found, history)
    with steps("examples"):
        random_rows, failure_rows, pngs["examples"] = _examples(gallery, evaluated, found.scores, config, rng)
    with steps("hygiene"):
        hygiene, hygiene_html = _hygiene(gallery, queries, evaluated, found, config, groups, leak_neighbours)
    metrics: dict[str, Any] = {
        "counts": {"gallery": len(gallery), "queries": len(evaluated), "classes": len(gallery.class_names),
                   "dim": int(gallery.embeddings.shape[1]),
                   "mode": "queries" if queries is not None else "leave_one_out"},
        **_retrieval_metrics(found, gallery.class_names, config),
        "cluster": cluster,
        "cluster_set": "queries" if queries is not None else "gallery",
        "tsne": {"points": len(tsne.rows), "set": "queries" if queries is not None else "gallery",
                 "perplexity": tsne.perplexity, "hover_thumbnails": sum(t is not None for t in thumbs)},
        "examples": {"random": [evaluated.name_of(i) for i in random_rows],
                     "failures": [evaluated.name_of(i) for i in failure_rows]},
        "hygiene": hygiene,
        "against_start": dict(start) if start else None,
        "timings_s": steps.timings,
    }
    return _finish(out, steps, metrics, evaluated, tsne, thumbs, pngs, config=config, info=info, history=history,
                   title=title, hygiene_html=hygiene_html)


def _build_unlabelled(gallery: EmbeddingSet, out: Path, *, config: ReportConfig, info: Mapping[str, Any] | None,
                      history: list[dict] | None, progress: bool, title: str,
                      groups: Sequence[Mapping] | None) -> ReportResult:
    """The report of images without labels: the t-SNE map (one colour), the duplicate groups, the training curves."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    steps = _Steps(progress)
    tsne, thumbs = _map(gallery, config, rng, progress, steps)
    with steps("figures"):
        pngs = {"tsne": figs.tsne_figure(tsne.coords, gallery.labels[tsne.rows], gallery.class_names)}
        curves = _training_curves(history)
        if curves is not None:
            pngs["training_curves"] = curves
    with steps("hygiene"):
        assert config.duplicates is not None
        hygiene = hygiene_metrics(None, np.zeros(0), np.zeros(0), config.duplicates, groups, queries=len(gallery))
        hygiene_html = hygiene_rows([], groups or [], gallery, gallery, shown=config.hygiene_shown,
                                    size=max(config.thumbnail_size, 48))
    metrics: dict[str, Any] = {
        "counts": {"gallery": len(gallery), "queries": 0, "classes": 0, "dim": int(gallery.embeddings.shape[1]),
                   "mode": "unlabelled"},
        "labelled": False, "class_metrics": UNLABELLED_NOTE,
        "tsne": {"points": len(tsne.rows), "set": "gallery", "perplexity": tsne.perplexity,
                 "hover_thumbnails": sum(t is not None for t in thumbs)},
        "hygiene": hygiene,
        "timings_s": steps.timings,
    }
    return _finish(out, steps, metrics, gallery, tsne, thumbs, pngs, config=config, info=info, history=history,
                   title=title, hygiene_html=hygiene_html)


def _map(evaluated: EmbeddingSet, config: ReportConfig, rng: np.random.Generator, progress: bool,
         steps: _Steps) -> tuple[TsneMap, list[str | None]]:
    """The t-SNE map of ``evaluated`` and the hover thumbnails of its points (steps "t-SNE" and "thumbnails")."""
    with steps("t-SNE"):
        tsne = tsne_map(evaluated.embeddings, sample=config.tsne_sample, perplexity=config.tsne_perplexity,
                        pca_dims=config.pca_dims, max_iter=config.tsne_max_iter, seed=config.seed)
    with steps("thumbnails"):
        thumbs = _hover_thumbnails(evaluated, tsne, config, rng, progress)
    return tsne, thumbs


def _finish(out: Path, steps: _Steps, metrics: dict[str, Any], evaluated: EmbeddingSet, tsne: TsneMap,
            thumbs: list[str | None], pngs: dict[str, bytes], *, config: ReportConfig,
            info: Mapping[str, Any] | None, history: list[dict] | None, title: str,
            hygiene_html: Any) -> ReportResult:
    """The "write" step: render and write the page, the JSON and the figures; the timings then include it."""
    with steps("write"):
        written = _json_safe(metrics)  # a copy: its timings end before "write"
        html = _render(evaluated, tsne, thumbs, pngs, written, config=config, info=info, title=title,
                       hygiene_html=hygiene_html)
        result = _write(out, pngs, html, written, config=config, info=info, history=history, title=title)
    steps.close()
    result.metrics["timings_s"] = steps.timings  # now including "write"
    log.info("report written to %s", result.html_path)
    return result


def _training_curves(history: list[dict] | None) -> bytes | None:
    """The PNG of the training curves (epochs after 0), or None without any."""
    if any(row.get("epoch", 1) > 0 for row in history or []):
        return figs.training_figure([row for row in history or [] if row.get("epoch", 1) > 0])
    return None


def _retrieve(gallery: EmbeddingSet, queries: EmbeddingSet | None, config: ReportConfig,
              progress: bool) -> _Retrieval:
    """Search each query in the gallery (each gallery item among the others when ``queries`` is None)."""
    evaluated = queries if queries is not None else gallery
    scores = score_queries(evaluated.embeddings, evaluated.labels,
                           None if queries is None else gallery.embeddings,
                           None if queries is None else gallery.labels,
                           keep=config.neighbors_kept, chunk_elements=config.chunk_elements, progress=progress)
    summary, predicted = retrieval_summary(scores, evaluated.labels, gallery.labels, k=config.k,
                                           recall_at=config.recall_at, num_classes=len(gallery.class_names))
    confusion = class_confusion(evaluated.labels, predicted, len(gallery.class_names))
    return _Retrieval(scores, summary, predicted, confusion, per_class_accuracy(confusion))


def _retrieval_metrics(found: _Retrieval, names: Sequence[str], config: ReportConfig) -> dict[str, Any]:
    """The retrieval section of ``report.json``: overall numbers, per class, the confusion matrix."""
    confusion, accuracy = found.confusion, found.accuracy
    return {
        "retrieval": found.summary,
        "per_class": [{"class": c, "name": names[c], "queries": int(confusion[c].sum()),
                       "accuracy": float(accuracy[c])} for c in range(len(names))],
        "confusion_matrix": confusion.tolist(),
        "confused_pairs": most_confused_pairs(confusion, names, config.confused_pairs),
    }


def _hover_thumbnails(evaluated: EmbeddingSet, tsne: TsneMap, config: ReportConfig, rng: np.random.Generator,
                      progress: bool) -> list[str | None]:
    """A data URI for ``config.hover_thumbnails`` random points of the t-SNE map (None for the others, and for
    all when the images have no files)."""
    thumbs: list[str | None] = [None] * len(tsne.rows)
    if evaluated.paths is not None and config.hover_thumbnails:
        chosen = np.sort(rng.choice(len(tsne.rows), size=min(config.hover_thumbnails, len(tsne.rows)),
                                    replace=False))
        uris = thumbnail_uris([evaluated.paths[tsne.rows[i]] for i in chosen], config.thumbnail_size,
                              progress=progress)
        for i, uri in zip(chosen, uris):
            thumbs[i] = uri
    return thumbs


def _figures(evaluated: EmbeddingSet, tsne: TsneMap, found: _Retrieval, history: list[dict] | None
             ) -> dict[str, bytes]:
    """The PNGs: t-SNE map, confusion matrix, per-class accuracy, training curves (epochs after 0, if any)."""
    names = evaluated.class_names
    overall_accuracy = next(v for name, v in found.summary.items() if name.startswith("knn_accuracy@"))
    pngs: dict[str, bytes] = {
        "tsne": figs.tsne_figure(tsne.coords, evaluated.labels[tsne.rows], names),
        "confusion": figs.confusion_figure(found.confusion, names),
        "per_class_accuracy": figs.per_class_figure(found.accuracy, names, overall_accuracy),
    }
    curves = _training_curves(history)
    if curves is not None:
        pngs["training_curves"] = curves
    return pngs


def _examples(gallery: EmbeddingSet, evaluated: EmbeddingSet, scores: QueryScores, config: ReportConfig,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Random queries and the worst failures with their neighbours: (random rows, failure rows, grid PNG)."""
    shown = config.neighbors_shown
    random_rows, failure_rows = choose_examples(gallery.labels[scores.indices[:, :shown]],
                                                scores.similarities[:, :shown], evaluated.labels,
                                                examples=config.examples, failures=config.failures, rng=rng)
    tile = max(config.thumbnail_size, 48)
    sections = []
    for heading, rows in (("Random queries", random_rows), ("Worst failures (neighbors mostly wrong)",
                                                            failure_rows)):
        if len(rows):
            sections.append((heading, example_rows(evaluated, gallery, rows, scores.indices[:, :shown],
                                                   scores.similarities[:, :shown], tile=tile)))
    return random_rows, failure_rows, render_grid(sections, tile=tile)


def _hygiene(gallery: EmbeddingSet, queries: EmbeddingSet | None, evaluated: EmbeddingSet, found: _Retrieval,
             config: ReportConfig, groups: Sequence[Mapping] | None,
             leak_neighbours: LeakNeighbours | None = None) -> tuple[dict[str, Any], str]:
    """Queries that leak from the gallery and the gallery's duplicate groups: (numbers, HTML rows)."""
    candidates = leak_neighbours if leak_neighbours is not None else found.scores
    leaks = None if queries is None else find_leaks(queries, gallery, candidates, config.duplicates)
    metrics = hygiene_metrics(leaks, found.predicted, evaluated.labels, config.duplicates, groups,
                              queries=len(evaluated))
    rows = hygiene_rows(leaks or [], groups or [], evaluated, gallery, shown=config.hygiene_shown,
                        size=max(config.thumbnail_size, 48))
    return metrics, rows


def _render(evaluated: EmbeddingSet, tsne: TsneMap, thumbs: list[str | None], pngs: Mapping[str, bytes],
            metrics: dict[str, Any], *, config: ReportConfig, info: Mapping[str, Any] | None, title: str,
            hygiene_html: str) -> str:
    """The self-contained HTML page (figures inlined as data URIs)."""
    names = evaluated.class_names
    return render_html(
        title=title, subtitle=f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}", metrics=metrics,
        figures={name: png_data_uri(png) for name, png in pngs.items()},
        tsne_json=tsne_payload(tsne.coords, evaluated.labels[tsne.rows], [evaluated.name_of(i) for i in tsne.rows],
                               thumbs, names, figs.class_colours(len(names))),
        info=info, settings=config.to_dict(), hygiene=hygiene_html)


def _write(out: Path, pngs: Mapping[str, bytes], html: str, metrics: dict[str, Any], *, config: ReportConfig,
           info: Mapping[str, Any] | None, history: list[dict] | None, title: str) -> ReportResult:
    """Write the PNGs, ``report.html`` and ``report.json`` into ``out``, each atomically."""
    figure_paths = {}
    for name, png in pngs.items():
        figure_paths[name] = out / f"{name}.png"
        atomic_write(figure_paths[name], png)
    html_path, json_path = out / HTML_FILE, out / JSON_FILE
    atomic_write(html_path, html.encode("utf-8"))
    document = _json_safe({"title": title, "config": config.to_dict(), "info": dict(info or {}),
                           "history": list(history or []), "metrics": metrics,
                           "files": {name: path.name for name, path in figure_paths.items()}})
    atomic_write(json_path, (json.dumps(document, indent=2, allow_nan=False) + "\n").encode("utf-8"))
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

"""Shadow evaluation: an index served with one model (*old*) against the same items embedded with another (*new*).

Three kinds of queries, one per run:

* **labelled images** (a folder of class folders or a CSV): each side embeds them with its own model and searches
  its own stored vectors by exact cosine (:mod:`similarity.metrics`), which gives each query's precision@1,
  MAP@R and kNN-vote correctness at ``k``.  The two sides answer the same queries, so they are compared paired:
  95% confidence intervals come from one seeded bootstrap over the queries (each resample draws queries with
  replacement and scores both sides on that draw), for each side and for the difference new - old; the kNN
  queries gained and lost are counted, with McNemar's exact test (:func:`similarity.gain.compare_to_start`).
* **edited copies of indexed images**, for indexes without labels (:mod:`engine.copy_evaluation`): each side
  searches a seeded copy of each sampled item for its original, with the model that finds its duplicates; copy
  recall@1 and reciprocal rank, compared paired as above.
* **logged traffic** (images from :mod:`api.querylog`, replayed with their label filter): both sides answer each
  one through :meth:`Engine.search`; the top-``k`` overlap (the two indexes hold the same item ids), whether the
  votes agree, and the queries whose answer changed most.

Each side's search latency (p50/p95 of ``timings_ms["total"]``) is measured on the same images, the two sides
taking turns.  The verdict reads the interval of the kNN-accuracy difference (of the copy recall@1 difference
for copies): ``better`` when all of it is above 0, ``worse`` when all of it is below, else ``no significant
difference``; ``unknown`` for logged traffic.

Files: ``evaluation.json`` and a self-contained ``evaluation.html`` in ``--out`` (default
``<new home>/evaluation/``), and always ``<new home>/evaluations/<old model sha256>.json``, which
:func:`recorded_verdict` reads before an alias is switched from the old model to the new one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from durablefile import atomic_write, file_sha256
from engine.copy_evaluation import COPY_METRICS, copy_queries, score_copies
from engine.engine import Engine, SearchResult
from engine.layout import EVALUATION_DIR, MODEL_FILE, VERDICTS_DIR
from engine.reporting import index_embeddings, without_paths
from index.location import is_milvus
from report.evaluation import render_evaluation
from similarity.data import LabelledImages, load_labelled_images
from similarity.gain import compare_to_start
from similarity.imageio import ImageDecodeError, ImageSource
from similarity.metrics import retrieval_summary, score_queries
from similarity.runtime import EmbedRuntime

logger = logging.getLogger(__name__)

EVALUATION_JSON = "evaluation.json"
EVALUATION_HTML = "evaluation.html"
SCHEMA = 1
METRICS = {"precision_at_1": "precision@1", "mean_average_precision_at_r": "MAP@R", "knn_accuracy": "kNN accuracy"}
BETTER, WORSE, NO_DIFFERENCE, UNKNOWN = "better", "worse", "no significant difference", "unknown"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class EvaluationError(ValueError):
    """The evaluation cannot be run as asked (the same index twice, no usable query, no shared label...)."""


@dataclass(frozen=True)
class EvaluationConfig:
    """``k``: neighbours searched and voted; ``resamples`` and ``confidence``: the bootstrap; ``seed``: every
    draw (the bootstrap, ``sample``, the latency sample); ``sample``: queries used (a seeded sample; None: all);
    ``latency_sample``: labelled queries also searched through :meth:`Engine.search` for the latency;
    ``changed_shown``: logged queries with the lowest overlap listed (and shown), ``neighbors_shown`` of each."""

    k: int = 10
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    sample: int | None = None
    latency_sample: int = 500
    changed_shown: int = 12
    neighbors_shown: int = 5
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("k", "resamples", "batch_size", "neighbors_shown"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("latency_sample", "changed_shown"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"sample must be >= 1, got {self.sample}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class TrafficQuery:
    """A logged query to replay: its image file and the label filter it was searched with (None: none)."""

    path: str
    label: str | None = None


@dataclass(frozen=True)
class EvaluationResult:
    """The evaluation (what ``evaluation.json`` holds) and the files written."""

    evaluation: dict
    json_path: str
    html_path: str
    verdict_path: str


def evaluate_indexes(old: str | os.PathLike, new: str | os.PathLike, *,
                     queries: str | os.PathLike | LabelledImages | None = None,
                     traffic: Sequence[TrafficQuery] | None = None, traffic_source: str | None = None,
                     copies: int | None = None, out_dir: str | os.PathLike | None = None,
                     config: EvaluationConfig = EvaluationConfig(), runtime: EmbedRuntime = EmbedRuntime(),
                     progress: bool = True) -> EvaluationResult:
    """Open both indexes (``Engine.open``), evaluate ``new`` against ``old`` on labelled ``queries`` (a folder of
    class folders or a CSV), on logged ``traffic`` (read from ``traffic_source``) or on edited ``copies`` of that
    many indexed items, and write the files.  Raises :class:`EvaluationError` (a ``ValueError``),
    ``DatasetError``, ``CheckpointError``, ``IndexStoreError``."""
    _check_one_source(queries, traffic, copies)
    if _same_location(old, new):
        raise EvaluationError(f"--old and --new name the same index ({old}); evaluate a re-embedded copy")
    data = queries if isinstance(queries, LabelledImages) or queries is None else load_labelled_images(
        queries, min_per_class=1)
    if traffic is not None and not traffic:
        raise EvaluationError(f"no logged queries in {traffic_source or 'the query log'}")
    old_engine = Engine.open(old, runtime=runtime)
    try:
        new_engine = Engine.open(new, runtime=runtime)
        try:
            if os.path.realpath(old_engine.directory) == os.path.realpath(new_engine.directory):
                raise EvaluationError(f"--old and --new open the same index ({new_engine.location})")
            evaluation = evaluate(old_engine, new_engine, queries=data, traffic=traffic, copies=copies,
                                  config=config, progress=progress)
            if copies is None:
                evaluation["queries"]["source"] = (data.source if data is not None and data.source
                                                   else os.path.abspath(os.fspath(traffic_source or "")))
            out = out_dir if out_dir is not None else os.path.join(new_engine.directory, EVALUATION_DIR)
            return write_evaluation(evaluation, out, new_home=new_engine.directory)
        finally:
            new_engine.close()
    finally:
        old_engine.close()


def _check_one_source(queries, traffic, copies) -> None:
    if sum(source is not None for source in (queries, traffic, copies)) != 1:
        raise EvaluationError("give labelled queries, logged traffic or a number of copies (exactly one)")
    if copies is not None and copies < 1:
        raise EvaluationError(f"copies must be >= 1, got {copies}")


def evaluate(old: Engine, new: Engine, *, queries: LabelledImages | None = None,
             traffic: Sequence[TrafficQuery] | None = None, copies: int | None = None,
             config: EvaluationConfig = EvaluationConfig(), progress: bool = False) -> dict:
    """The evaluation of ``new`` against ``old`` as a JSON-ready dict, what ``evaluation.json`` holds; exactly one
    of ``queries``, ``traffic`` and ``copies``.  Raises :class:`EvaluationError` when nothing can be scored."""
    _check_one_source(queries, traffic, copies)
    rng = np.random.default_rng(config.seed)
    evaluation = {"schema": SCHEMA, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "old": _side(old), "new": _side(new), "settings": asdict(config), "labelled": None, "traffic": None,
                  "copies": None}
    if queries is not None:
        evaluation["labelled"], evaluation["latency_ms"], evaluation["queries"] = _labelled(
            old, new, queries, config, rng, progress)
        evaluation["verdict"], evaluation["verdict_reason"] = verdict(evaluation["labelled"])
    elif copies is not None:
        evaluation["copies"], evaluation["latency_ms"], evaluation["queries"] = _copies(
            old, new, copies, config, rng, progress)
        evaluation["verdict"], evaluation["verdict_reason"] = verdict(evaluation["copies"], "copy_recall_at_1")
    else:
        assert traffic is not None
        evaluation["traffic"], evaluation["latency_ms"], evaluation["queries"] = _traffic(
            old, new, traffic, config, rng, progress)
        evaluation["verdict"], evaluation["verdict_reason"] = verdict(None)
    return evaluation


def verdict(scored: dict | None, metric: str = "knn_accuracy") -> tuple[str, str]:
    """``(verdict, why)`` from the interval of the difference new - old of ``metric`` in ``scored`` (the labelled
    or the copies section)."""
    if not scored:
        return UNKNOWN, "no labelled queries: the overlap of logged traffic shows change, not quality"
    diff = scored["metrics"][metric]["difference"]
    found = (f"{scored['metrics'][metric].get('name', metric)} new - old {diff['value']:+.4f}, {scored['confidence']:.0%} CI "
             f"[{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}] over {scored['queries']} queries")
    if diff["ci_low"] > 0:
        return BETTER, found + ": all above 0"
    if diff["ci_high"] < 0:
        return WORSE, found + ": all below 0"
    return NO_DIFFERENCE, found + ": it includes 0"


def bootstrap_means(values: np.ndarray, *, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Column means of ``resamples`` resamples (rows drawn with replacement) of ``values: (n, m)``:
    ``(resamples, m)`` float64.  The same draw serves every column, which makes the comparison paired."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        raise ValueError("nothing to resample")
    means = np.empty((resamples, values.shape[1]))
    per_chunk = max(1, (1 << 20) // (n * values.shape[1]))  # about 8 MiB of drawn values at a time
    for start in range(0, resamples, per_chunk):
        count = min(per_chunk, resamples - start)
        means[start:start + count] = values[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return means


def interval(value: float, means: np.ndarray, confidence: float) -> dict:
    """``{"value", "ci_low", "ci_high"}``: ``value`` and the percentile interval of bootstrap ``means: (r,)``."""
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"value": _round(value), "ci_low": _round(low), "ci_high": _round(high)}


def paired_intervals(old: np.ndarray, new: np.ndarray, *, resamples: int, confidence: float,
                     rng: np.random.Generator) -> dict:
    """Intervals of the mean of ``old``, of ``new`` and of ``new - old``: per-query values ``(n,)`` of the same
    queries; NaN (not scored on a side) leaves a query out of both."""
    both = ~(np.isnan(old) | np.isnan(new))
    old, new = old[both], new[both]
    if not len(old):
        return {"queries": 0, "old": None, "new": None, "difference": None}
    means = bootstrap_means(np.stack([old, new, new - old], axis=1), resamples=resamples, rng=rng)
    return {"queries": int(len(old)), "old": interval(old.mean(), means[:, 0], confidence),
            "new": interval(new.mean(), means[:, 1], confidence),
            "difference": interval(new.mean() - old.mean(), means[:, 2], confidence)}


def write_evaluation(evaluation: dict, out_dir: str | os.PathLike, *, new_home: str) -> EvaluationResult:
    """Write ``evaluation.json`` and ``evaluation.html`` into ``out_dir`` and the verdict record
    ``<new_home>/evaluations/<old model sha256>.json`` (the same JSON), each with ``atomic_write``."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    json_path, html_path = os.path.join(out_dir, EVALUATION_JSON), os.path.join(out_dir, EVALUATION_HTML)
    verdict_path = os.path.join(os.path.abspath(new_home), VERDICTS_DIR, f"{evaluation['old']['model_sha256']}.json")
    evaluation["files"] = {"json": json_path, "html": html_path, "verdict": verdict_path}
    document = (json.dumps(evaluation, indent=1, allow_nan=False) + "\n").encode("utf-8")
    for path, data in ((json_path, document), (html_path, render_evaluation(evaluation).encode("utf-8")),
                       (verdict_path, document)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, data)
    return EvaluationResult(evaluation, json_path, html_path, verdict_path)


def recorded_verdict(new_home: str | os.PathLike, old_model_sha: str) -> dict | None:
    """The evaluation recorded in ``new_home`` against the model ``old_model_sha`` (its ``verdict`` key says
    better, worse, no significant difference or unknown), or None when there is none, or when it judged another
    model than the ``model.pt`` now in ``new_home`` (re-embedded since).  ``ValueError`` for a malformed sha256
    or a record that cannot be read as an evaluation."""
    if not isinstance(old_model_sha, str) or not _SHA256.fullmatch(old_model_sha):
        raise ValueError(f"old_model_sha must be a sha256 in hex (64 characters), got {old_model_sha!r}")
    path = os.path.join(os.fspath(new_home), VERDICTS_DIR, f"{old_model_sha}.json")
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the evaluation record {path}: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("new"), dict) or "verdict" not in record:
        raise ValueError(f"{path} is not an evaluation record")
    model = os.path.join(os.fspath(new_home), MODEL_FILE)
    if os.path.isfile(model) and file_sha256(model) != record["new"].get("model_sha256"):
        logger.warning("the evaluation %s judged model %s; %s now holds another model: ignored", path,
                       record["new"].get("model_sha256"), model)
        return None
    return record


# ---------------------------------------------------------------------------------------------- labelled queries
def _labelled(old: Engine, new: Engine, data: LabelledImages, config: EvaluationConfig, rng: np.random.Generator,
              progress: bool) -> tuple[dict, dict, dict]:
    """(the "labelled" section, the latency, the "queries" section)."""
    found = len(data) + len(data.skipped)
    data = _sample(data, config.sample, rng)
    shared = set(old.store.label_counts()) & set(new.store.label_counts())
    matched = [name for name in data.class_names if name in shared]
    if not matched:
        raise EvaluationError(f"none of the query labels ({_listed(data.class_names)}) is a label of both indexes "
                              f"({_listed(sorted(shared)) if shared else 'they share no label'}): nothing to score")
    label_known = np.isin(data.labels, [data.class_names.index(name) for name in matched])
    if not label_known.all():
        logger.warning("%d queries carry a label that is not in both indexes: left out", int((~label_known).sum()))
    (old_scores, old_kept), (new_scores, new_kept) = (_score_side(side, data, config, progress) for side in (old, new))
    usable = ~np.isnan(old_scores["knn_accuracy"]) & ~np.isnan(new_scores["knn_accuracy"])
    if not usable.any():
        raise EvaluationError("no query could be embedded and scored by both models")
    metrics = {key: {"name": name, **paired_intervals(old_scores[key][usable], new_scores[key][usable],
                                                      resamples=config.resamples, confidence=config.confidence,
                                                      rng=rng)}
               for key, name in METRICS.items()}
    paired = compare_to_start(old_scores["knn_accuracy"][usable] > 0.5, new_scores["knn_accuracy"][usable] > 0.5,
                              best_epoch=1)  # McNemar on the queries one side gets right and the other wrong
    labelled = {"queries": int(usable.sum()), "confidence": config.confidence, "metrics": metrics,
                "knn_changes": {"gained": paired.only_trained, "lost": paired.only_start,
                                "mcnemar_p_value": _round(paired.p_value)}}
    rows = np.sort(rng.permutation(np.flatnonzero(usable))[:config.latency_sample])
    latency = _latency(old, new, [_source(data, int(i)) for i in rows], config.k, progress)
    queries = {"kind": "labelled", "found": found, "sampled": len(data), "used": int(usable.sum()),
               "skipped": len(data.skipped) + int((~(old_kept & new_kept)).sum()),
               "label_not_in_index": int((~label_known).sum())}
    return labelled, latency, queries


def _score_side(engine: Engine, data: LabelledImages, config: EvaluationConfig,
                progress: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-query ``(n,)`` float64 values of each metric on one side (NaN where a query was not scored: unreadable,
    or its label is not in the index), and ``(n,)`` bool: which queries this side could embed."""
    embedded = engine.embedder.embed_data(data, batch_size=config.batch_size, progress=progress)
    kept = np.zeros(len(data), dtype=bool)
    kept[embedded.kept] = True
    gallery = index_embeddings(engine.store, data.class_names)
    if data.paths is not None:  # a query that is itself indexed must not find itself
        gallery = without_paths(gallery, {os.path.abspath(data.paths[i]) for i in embedded.kept})
    known = np.isin(data.labels[embedded.kept], gallery.labels)
    rows = embedded.kept[known]
    values = {name: np.full(len(data), np.nan) for name in METRICS}
    if not len(rows):
        return values, kept
    labels = data.labels[rows]
    scores = score_queries(embedded.embeddings[known], labels, gallery.embeddings, gallery.labels, keep=config.k)
    _, predicted = retrieval_summary(scores, labels, gallery.labels, k=config.k, recall_at=(),
                                     num_classes=len(gallery.class_names))
    values["precision_at_1"][rows] = scores.precision_at_1
    values["mean_average_precision_at_r"][rows] = scores.average_precision_at_r
    values["knn_accuracy"][rows] = (predicted == labels).astype(np.float64)
    return values, kept


def _source(data: LabelledImages, i: int) -> ImageSource:
    if data.paths is not None:
        return data.paths[i]
    buffer = io.BytesIO()
    data.load(i).save(buffer, "PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- copies
def _copies(old: Engine, new: Engine, n: int, config: EvaluationConfig, rng: np.random.Generator,
            progress: bool) -> tuple[dict, dict, dict]:
    """(the "copies" section, the latency, the "queries" section)."""
    queries = copy_queries(old, new, n, rng)
    if not len(queries.ids):
        raise EvaluationError(f"none of {queries.sampled} sampled items could be read from both indexes")
    old_scores, new_scores = (score_copies(side, queries, config.k) for side in (old, new))
    metrics = {key: {"name": name, **paired_intervals(old_scores[key], new_scores[key], resamples=config.resamples,
                                                      confidence=config.confidence, rng=rng)}
               for key, name in COPY_METRICS.items()}
    paired = compare_to_start(old_scores["copy_recall_at_1"] > 0.5, new_scores["copy_recall_at_1"] > 0.5,
                              best_epoch=1)
    section = {"queries": len(queries.ids), "confidence": config.confidence, "metrics": metrics,
               "found_changes": {"gained": paired.only_trained, "lost": paired.only_start,
                                 "mcnemar_p_value": _round(paired.p_value)}}
    latency = _latency(old, new, queries.images[:config.latency_sample], config.k, progress)
    return section, latency, {"kind": "copies", "found": queries.sampled, "sampled": queries.sampled,
                              "used": len(queries.ids), "skipped": queries.sampled - len(queries.ids)}


# ---------------------------------------------------------------------------------------------- logged traffic
def _traffic(old: Engine, new: Engine, traffic: Sequence[TrafficQuery], config: EvaluationConfig,
             rng: np.random.Generator, progress: bool) -> tuple[dict, dict, dict]:
    """(the "traffic" section, the latency, the "queries" section)."""
    chosen = list(traffic)
    if config.sample is not None and config.sample < len(chosen):
        chosen = [chosen[i] for i in np.sort(rng.choice(len(chosen), config.sample, replace=False))]
    rows, timings, skipped = [], {"old": [], "new": []}, 0
    for turn, query in enumerate(tqdm(chosen, desc="replaying", unit="query", disable=not progress)):
        try:
            answers = _search_both(old, new, query.path, config.k, query.label, turn)
        except (ImageDecodeError, ValueError) as exc:  # unreadable, too large, or a label filter refused
            logger.warning("skipping logged query: %s", exc if query.path in str(exc) else f"{query.path}: {exc}")
            skipped += 1
            continue
        for side, result in zip(("old", "new"), answers):
            timings[side].append(result.timings_ms["total"])
        old_ids, new_ids = ({n.id for n in r.neighbors} for r in answers)
        size = max(len(old_ids), len(new_ids))
        rows.append((query, answers, len(old_ids & new_ids) / size if size else 1.0,
                     _vote_label(answers[0]) == _vote_label(answers[1])))
    if not rows:
        raise EvaluationError(f"none of the {len(chosen)} logged queries could be searched (see the warnings)")
    overlap = np.array([row[2] for row in rows])
    agree = np.array([row[3] for row in rows], dtype=np.float64)
    means = bootstrap_means(np.stack([overlap, agree], axis=1), resamples=config.resamples, rng=rng)
    changed = sorted(range(len(rows)), key=lambda i: (rows[i][2], rows[i][3], i))[:config.changed_shown]
    section = {"queries": len(rows), "confidence": config.confidence,
               "overlap": {**interval(overlap.mean(), means[:, 0], config.confidence),
                           "median": _round(np.median(overlap)), "identical_share": _round((overlap == 1.0).mean())},
               "vote_agreement": interval(agree.mean(), means[:, 1], config.confidence),
               "changed": [_changed(rows[i], config.neighbors_shown) for i in changed]}
    queries = {"kind": "traffic", "found": len(traffic), "sampled": len(chosen), "used": len(rows),
               "skipped": skipped}
    return section, {side: _percentiles(values) for side, values in timings.items()}, queries


def _vote_label(result: SearchResult) -> str | None:
    """The class a search voted for; None without a vote (an index without labels)."""
    return result.vote.label if result.vote is not None else None


def _changed(row: tuple, shown: int) -> dict:
    query, answers, overlap, agree = row
    return {"query": query.path, "label_filter": query.label, "overlap": _round(overlap), "votes_agree": bool(agree),
            **{side: {"vote": _vote_label(r),
                      "neighbors": [{"id": n.id, "label": n.label, "similarity": _round(n.similarity), "path": n.path}
                                    for n in r.neighbors[:shown]]}
               for side, r in zip(("old", "new"), answers)}}


# ---------------------------------------------------------------------------------------------- latency
def _search_both(old: Engine, new: Engine, source: ImageSource, k: int, label: str | None,
                 turn: int) -> tuple[SearchResult, SearchResult]:
    """Both sides' answers, the side that searches first alternating with ``turn`` (neither always gets the
    warmer caches)."""
    first, second = (old, new) if turn % 2 == 0 else (new, old)
    a = first.search([source], k=k, label=label)[0]
    b = second.search([source], k=k, label=label)[0]
    return (a, b) if turn % 2 == 0 else (b, a)


def _latency(old: Engine, new: Engine, sources: list[ImageSource], k: int, progress: bool) -> dict:
    if sources:  # one search each first: lazy start-up (threads, caches) is no query's latency
        _search_both(old, new, sources[0], k, None, 0)
    timings = {"old": [], "new": []}
    for turn, source in enumerate(tqdm(sources, desc="latency", unit="query", disable=not progress)):
        for side, result in zip(("old", "new"), _search_both(old, new, source, k, None, turn)):
            timings[side].append(result.timings_ms["total"])
    return {side: _percentiles(values) for side, values in timings.items()}


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"searches": 0, "p50": None, "p95": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"searches": len(values), "p50": _round(p50, 3), "p95": _round(p95, 3)}


# ---------------------------------------------------------------------------------------------- helpers
def _side(engine: Engine) -> dict:
    return {"location": engine.location, "home": os.path.abspath(engine.directory),
            "model_sha256": engine.checkpoint.sha256, "items": len(engine), "runtime": engine.embedder.runtime}


def _same_location(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    if is_milvus(a) or is_milvus(b):
        return os.fspath(a) == os.fspath(b)
    return os.path.realpath(a) == os.path.realpath(b)


def _sample(data: LabelledImages, sample: int | None, rng: np.random.Generator) -> LabelledImages:
    if sample is None or sample >= len(data):
        return data
    subset = data.subset(np.sort(rng.choice(len(data), sample, replace=False)))
    subset.skipped = data.skipped
    return subset


def _listed(names: Sequence[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _round(value: float, digits: int = 6) -> float | None:
    value = float(value)
    return None if not np.isfinite(value) else round(value, digits)

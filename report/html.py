"""The report as ONE self-contained HTML file: figures and thumbnails inlined as data URIs, no network.

:func:`render_html` fills ``templates/report.html`` (Jinja2, autoescaped) from the numbers of
:func:`report.build.build_report`; the t-SNE points travel as JSON to a small vanilla-JS SVG scatter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

CLUSTER_MEANINGS = {
    "silhouette_cosine": "in [-1, 1], higher: classes tight and apart",
    "davies_bouldin": ">= 0, lower: classes tight and apart",
    "kmeans_nmi": "in [0, 1], agreement of k-means clusters with classes",
    "kmeans_ami": "<= 1, same corrected for chance (0: random)",
    "silhouette_points": "points in the silhouette sample",
    "kmeans_points": "points in the k-means / Davies-Bouldin sample",
}
SUMMARY_KEYS = ("precision_at_1", "mean_average_precision_at_r", "r_precision", "knn_accuracy@", "recall@")


def format_value(value: Any) -> str:
    """Numbers to short text (4 significant decimals, n/a for NaN/None); other values to str."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value.is_integer() and abs(value) >= 1:
            return f"{int(value):,}"
        return f"{value:.4g}" if abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def flatten(info: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> [("a.b", "formatted value")], in insertion order."""
    rows: list[tuple[str, str]] = []
    for key, value in info.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(flatten(value, name + "."))
        else:
            rows.append((name, format_value(value)))
    return rows


def tsne_payload(coords: Sequence[Sequence[float]], labels: Sequence[int], names: Sequence[str],
                 thumbs: Sequence[str | None], class_names: Sequence[str], colours: Sequence[str]) -> str:
    """JSON for the interactive scatter, safe to place inside a <script> element.

    coords: (m, 2); labels, names, thumbs: m entries (thumbs: data URI or None).
    """
    thumb_list: list[str] = []
    points = []
    for (x, y), label, name, thumb in zip(coords, labels, names, thumbs):
        index = -1
        if thumb is not None:
            index = len(thumb_list)
            thumb_list.append(thumb)
        points.append([round(float(x), 2), round(float(y), 2), int(label), index, str(name)])
    payload = {"points": points, "classes": list(class_names), "colours": list(colours), "thumbs": thumb_list,
               "present": sorted({int(label) for label in labels})}
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def render_html(*, title: str, subtitle: str, metrics: Mapping[str, Any], figures: Mapping[str, str | None],
                tsne_json: str, info: Mapping[str, Any] | None, settings: Mapping[str, Any],
                hygiene: Mapping[str, Any] | None = None) -> str:
    """The full HTML page. ``metrics`` is the report's metrics dict (see ``report.json``); ``figures`` maps
    figure names (tsne, confusion, per_class_accuracy, examples, training_curves) to data URIs or None;
    ``hygiene``: the thumbnail rows of :func:`report.hygiene.hygiene_rows`. Metrics with ``"labelled": False``
    (images without labels) give the page without class sections, with ``metrics["class_metrics"]`` saying why."""
    env = Environment(loader=PackageLoader("report", "templates"), autoescape=select_autoescape(["html"]))
    if not metrics.get("labelled", True):
        return _render_unlabelled(env, title=title, subtitle=subtitle, metrics=metrics, figures=figures,
                                  tsne_json=tsne_json, info=info, settings=settings, hygiene=hygiene)
    retrieval = metrics["retrieval"]
    cards = [{"name": name, "value": format_value(value)} for name, value in retrieval.items()
             if name.startswith(SUMMARY_KEYS)]
    per_class = [{"name": row["name"], "queries": row["queries"], "accuracy": "n/a" if row["accuracy"] is None else f"{row['accuracy']:.4f}"}
                 for row in metrics["per_class"]]
    cluster = [(name, format_value(value), CLUSTER_MEANINGS.get(name, "")) for name, value in metrics["cluster"].items()]
    counts = metrics["counts"]
    evaluation_note = (
        f"{counts['queries']:,} held-out queries searched in a gallery of {counts['gallery']:,} items."
        if counts["mode"] == "queries" else
        f"Leave-one-out: each of the {counts['gallery']:,} gallery items is searched in the rest of the gallery."
    ) + f" {counts['classes']} classes. kNN vote over k = {settings['k']} neighbors."
    tsne_note = _tsne_note(metrics, settings)
    return env.get_template("report.html").render(
        title=title, subtitle=subtitle, labelled=True, cards=cards, evaluation_note=evaluation_note,
        retrieval=[(name, format_value(value)) for name, value in retrieval.items()],
        confused_pairs=metrics["confused_pairs"], per_class=per_class, cluster=cluster, figures=figures,
        tsne_note=tsne_note, tsne_json=tsne_json, info=flatten(info or {}), settings=flatten(settings),
        hygiene=flatten(metrics.get("hygiene", {})), hygiene_rows=hygiene or {},
        leakage=metrics.get("hygiene", {}).get("leakage"),
        hygiene_rule_cosine=metrics.get("hygiene", {}).get("rule", {}).get("cosine", 0.0),
        against_start=(metrics.get("against_start") or {}).get("verdict"),
        duplicate_search=((info or {}).get("duplicate_search_items"), counts["gallery"]),
    )


def _tsne_note(metrics: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    tsne = metrics["tsne"]
    return (f"{tsne['points']:,} points of the {tsne['set']} set (seeded sample), PCA to "
            f"{settings['pca_dims']} dims, perplexity {tsne['perplexity']:.1f}.")


def _render_unlabelled(env: Environment, *, title: str, subtitle: str, metrics: Mapping[str, Any],
                       figures: Mapping[str, str | None], tsne_json: str, info: Mapping[str, Any] | None,
                       settings: Mapping[str, Any], hygiene: Mapping[str, Any] | None) -> str:
    """The page for images without labels: the note on why there are no class metrics, the t-SNE map, the
    duplicate groups, training and model."""
    counts = metrics["counts"]
    return env.get_template("report.html").render(
        title=title, subtitle=subtitle, labelled=False, cards=[], unlabelled_note=metrics["class_metrics"],
        evaluation_note=f"{counts['gallery']:,} indexed images without labels.",
        retrieval=[], confused_pairs=[], per_class=[], cluster=[], figures=figures,
        tsne_note=_tsne_note(metrics, settings), tsne_json=tsne_json, info=flatten(info or {}),
        settings=flatten(settings), hygiene=flatten(metrics.get("hygiene", {})), hygiene_rows=hygiene or {},
        leakage=None, hygiene_rule_cosine=metrics.get("hygiene", {}).get("rule", {}).get("cosine", 0.0),
        against_start=None, duplicate_search=((info or {}).get("duplicate_search_items"), counts["gallery"]),
    )

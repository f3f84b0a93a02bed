"""The page of a shadow evaluation (``engine.evaluate``): one self-contained HTML file, thumbnails inlined.

:func:`render_evaluation` fills ``templates/evaluation.html`` (Jinja2, autoescaped) from the evaluation dict,
the same one ``evaluation.json`` holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from report.html import format_value
from report.thumbnails import thumbnail_uris

THUMBNAIL_SIZE = 64


def render_evaluation(evaluation: Mapping[str, Any], *, thumbnail_size: int = THUMBNAIL_SIZE) -> str:
    """The HTML page of ``evaluation`` (the dict of :func:`engine.evaluate.evaluate`); the queries whose answer
    changed most are shown with thumbnails of the query and of each side's neighbours."""
    env = Environment(loader=PackageLoader("report", "templates"), autoescape=select_autoescape(["html"]))
    labelled = evaluation.get("labelled")
    copies = evaluation.get("copies")
    metrics = []
    if labelled or copies:
        for found in (labelled or copies)["metrics"].values():
            if found["old"] is not None:
                metrics.append({"name": found["name"], "queries": found["queries"], "old": _interval(found["old"]),
                                "new": _interval(found["new"]), "difference": _interval(found["difference"], "+")})
    traffic = evaluation.get("traffic")
    changed = _changed_rows(traffic["changed"], thumbnail_size) if traffic else []
    latency = [{"side": side, "searches": found["searches"],
                **{key: "n/a" if found[key] is None else f"{found[key]:.1f}" for key in ("p50", "p95")}}
               for side, found in evaluation["latency_ms"].items()]
    return env.get_template("evaluation.html").render(
        evaluation=evaluation, metrics=metrics, labelled=labelled, copies=copies, traffic=traffic, changed=changed,
        latency=latency, size=thumbnail_size, fmt=format_value)


def _interval(found: Mapping[str, Any], sign: str = "") -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:{sign}.4f}"

    return f"{number(found['value'])} [{number(found['ci_low'])}, {number(found['ci_high'])}]"


def _changed_rows(changed: list[Mapping[str, Any]], size: int) -> list[dict]:
    """Each changed query with a data URI (or None) for the query and for each neighbour of both sides."""
    paths = [row["query"] for row in changed]
    for row in changed:
        paths += [n["path"] for side in ("old", "new") for n in row[side]["neighbors"]]
    uris = iter(thumbnail_uris(paths, size))
    query_uris = [next(uris) for _ in changed]
    rows = []
    for row, query_uri in zip(changed, query_uris):
        sides = {side: [{**n, "uri": next(uris)} for n in row[side]["neighbors"]] for side in ("old", "new")}
        rows.append({**row, "query_uri": query_uri, "old_neighbors": sides["old"], "new_neighbors": sides["new"]})
    return rows

"""The listing of ``simsearch index dedup``: ``duplicates.json`` (every group, with each member's evidence) and
``duplicates.html`` (thumbnails of the groups, mixed-label groups first).  The groups come from
:func:`engine.dedup.find_duplicates`; this module only renders them."""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from durablefile import atomic_write
from report.thumbnails import thumbnail_uris

if TYPE_CHECKING:  # the report takes the engine's listing, it does not import the engine
    from engine.dedup import DuplicateGroup, DuplicateMember, DuplicateReport

log = logging.getLogger(__name__)

GROUPS_JSON = "duplicates.json"
GROUPS_HTML = "duplicates.html"


def write_duplicates(report: DuplicateReport, out_dir: str | os.PathLike, *, thumbnails: int = 200,
                     thumb_size: int = 96) -> tuple[str, str]:
    """Write ``duplicates.json`` (every group) and ``duplicates.html`` (thumbnails of the first ``thumbnails``
    groups, mixed-label groups first) of an ``engine.dedup.DuplicateReport`` into ``out_dir``; returns both
    paths."""
    if thumbnails < 0:
        raise ValueError(f"thumbnails must be >= 0, got {thumbnails}")
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, GROUPS_JSON)
    atomic_write(json_path, json.dumps(report.to_dict(), indent=1).encode("utf-8"))
    shown = sorted(report.groups, key=lambda g: (not g.mixed_labels, g.keep))[:thumbnails]
    uris = iter(thumbnail_uris([m.path for g in shown for m in g.members], thumb_size))
    html_path = os.path.join(out_dir, GROUPS_HTML)
    atomic_write(html_path, _page(report, shown, uris, thumb_size).encode("utf-8"))
    log.info("duplicate listing: %s, %s", json_path, html_path)
    return json_path, html_path


def _evidence(member: DuplicateMember) -> str:
    """A member's caption line: how it links to its group."""
    if member.evidence is None:
        return "kept"
    verdict = member.evidence
    facts = [verdict["kind"]]
    if verdict.get("phash_bits") is not None and verdict["kind"] != "exact":
        facts.append(f"pHash {verdict['phash_bits']} bits")
    if verdict.get("inliers") is not None:
        facts.append(f"{verdict['inliers']} inliers")
    if verdict.get("correlation") is not None:
        facts.append(f"aligned correlation {verdict['correlation']:.3f}")
    return ", ".join(facts) + ("" if member.confirmed else " · unconfirmed, kept")


def _page(report: DuplicateReport, shown: list[DuplicateGroup], uris: Iterator[str | None], size: int) -> str:
    summary = report.summary()
    facts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items())
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Duplicate groups</title><style>",
             "body{font-family:sans-serif;margin:1em}.g{border:1px solid #ccc;margin:.5em 0;padding:.4em}",
             ".g.mixed{border-color:#c33}figure{display:inline-block;margin:.2em;text-align:center;font-size:11px}",
             f"img{{width:{size}px;height:{size}px;object-fit:contain;image-rendering:pixelated;background:#eee}}",
             ".remove img{opacity:.55}.unconfirmed{outline:2px dashed #c90}</style></head><body>",
             "<h1>Duplicate groups</h1>", f"<p>{html.escape(facts)}</p>",
             f"<p>Showing {len(shown)} of {len(report.groups)} groups (groups with different labels first, red). "
             "The first item of each group is kept; the faded ones would be removed. Items no pixel evidence "
             "links to the group (dashed) are kept.</p>"]
    for group in shown:
        kind = "exact" if group.exact else "near"
        parts.append(f"<div class='g{' mixed' if group.mixed_labels else ''}'><b>{kind}</b> "
                     f"keep {group.keep}{' &middot; different labels' if group.mixed_labels else ''}<br>")
        for position, member in enumerate(group.members):
            uri = next(uris)
            image = f"<img src='{uri}' alt=''>" if uri else "<span>(unreadable)</span>"
            role = "keep" if position == 0 else ("remove" if member.confirmed else "unconfirmed")
            parts.append(f"<figure class='{role}'>{image}<figcaption>"
                         f"{member.id} &middot; {html.escape(member.label)}<br>cos {member.similarity:.4f}"
                         f"<br>{html.escape(_evidence(member))}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)

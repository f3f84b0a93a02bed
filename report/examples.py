"""Example queries with their nearest neighbors: choosing them (random and worst failures) and drawing the grid.

The grid is one PNG drawn with Pillow: a row per query, the query first (blue frame), then its neighbors
framed green (same class) or red (other class), each captioned with its class and cosine similarity.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from report.config import EmbeddingSet
from report.thumbnails import load_thumbnail, placeholder

log = logging.getLogger(__name__)

QUERY_FRAME, RIGHT_FRAME, WRONG_FRAME = (31, 119, 180), (44, 160, 44), (214, 39, 40)


def choose_examples(neighbor_labels: np.ndarray, similarities: np.ndarray, query_labels: np.ndarray, *,
                    examples: int, failures: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pick query rows for the grid. neighbor_labels, similarities: (nq, m) of the shown neighbors.

    Returns (random example rows, worst-failure rows). Failures are queries whose neighbors are mostly
    wrong (under half right), fewest right first, then most confident (highest top-1 similarity) first;
    the random examples are drawn from the other queries.
    """
    right_share = (neighbor_labels == query_labels[:, None]).mean(axis=1)
    candidates = np.flatnonzero(right_share < 0.5)
    order = np.lexsort((-similarities[candidates, 0], right_share[candidates]))
    failure_rows = candidates[order[:failures]]
    rest = np.setdiff1d(np.arange(len(query_labels)), failure_rows)
    random_rows = np.sort(rng.choice(rest, size=min(examples, len(rest)), replace=False))
    return random_rows, failure_rows


@dataclass(frozen=True)
class GridCell:
    """One tile of the grid: the image (None: a placeholder), its caption, and its frame colour (RGB)."""

    image: Image.Image | None
    caption: str
    frame: tuple[int, int, int]


def example_rows(queries: EmbeddingSet, gallery: EmbeddingSet, query_rows: np.ndarray, indices: np.ndarray,
                 similarities: np.ndarray, *, tile: int) -> list[list[GridCell]]:
    """Grid rows for ``query_rows``: query cell + a cell per neighbor. indices, similarities: (nq, shown)."""
    cache: dict[tuple[int, int], Image.Image | None] = {}

    def image_of(which: EmbeddingSet, row: int) -> Image.Image | None:
        key = (id(which), int(row))
        if key not in cache:
            cache[key] = None if which.paths is None else load_thumbnail(which.paths[row], tile, upscale=True)
        return cache[key]

    grid = []
    for q in query_rows:
        true = int(queries.labels[q])
        cells = [GridCell(image_of(queries, q), f"Q: {queries.class_names[true]}", QUERY_FRAME)]
        for g, sim in zip(indices[q], similarities[q]):
            label = int(gallery.labels[g])
            cells.append(GridCell(image_of(gallery, g), f"{gallery.class_names[label]} {sim:.2f}",
                                  RIGHT_FRAME if label == true else WRONG_FRAME))
        grid.append(cells)
    return grid


def render_grid(sections: list[tuple[str, list[list[GridCell]]]], *, tile: int) -> bytes:
    """Draw titled sections of cell rows into one PNG; returns its bytes."""
    border, pad, caption_h, title_h = 4, 6, 16, 26
    cell_w, cell_h = tile + 2 * border, tile + 2 * border + caption_h
    columns = max((len(row) for _, rows in sections for row in rows), default=1)
    height = pad + sum(title_h + len(rows) * (cell_h + pad) for _, rows in sections)
    width = pad + columns * (cell_w + pad) + 12  # extra gap after the query column
    canvas = Image.new("RGB", (width, max(height, title_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    title_font, caption_font = ImageFont.load_default(size=16), ImageFont.load_default(size=10)
    y = pad
    for title, rows in sections:
        draw.text((pad, y + 4), title, fill="black", font=title_font)
        y += title_h
        for row in rows:
            x = pad
            for column, cell in enumerate(row):
                draw.rectangle([x, y, x + cell_w - 1, y + tile + 2 * border - 1], fill=cell.frame)
                image = cell.image if cell.image is not None else placeholder(cell.caption, tile)
                offset = ((tile - image.width) // 2, (tile - image.height) // 2)
                draw.rectangle([x + border, y + border, x + border + tile - 1, y + border + tile - 1], fill="white")
                canvas.paste(image, (x + border + offset[0], y + border + offset[1]))
                draw.text((x + 1, y + tile + 2 * border + 2), _fit(draw, cell.caption, caption_font, cell_w),
                          fill="black", font=caption_font)
                x += cell_w + pad + (12 if column == 0 else 0)
            y += cell_h + pad
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."

"""Turning service results into the JSON bodies documented in :mod:`api.openapi`."""

from __future__ import annotations

from engine.engine import SearchResult
from engine.ingestion import AddResult
from index import NO_LABEL, ItemMeta, Neighbor, Vote


THUMBNAIL_SIZE = 128


def item_urls(item_id: int, root: str = "") -> dict:
    return {"image_url": f"{root}/api/images/{item_id}",
            "thumbnail_url": f"{root}/api/images/{item_id}?size={THUMBNAIL_SIZE}"}


def label_json(label: str) -> str | None:
    """A stored label as answered: null for an item without one."""
    return None if label == NO_LABEL else label


def neighbor_json(rank: int, neighbor: Neighbor, root: str = "") -> dict:
    return {"rank": rank, "id": neighbor.id, "label": label_json(neighbor.label),
            "similarity": round(neighbor.similarity, 6), "score": round(neighbor.score, 6),
            **item_urls(neighbor.id, root)}


def prediction_json(vote: Vote | None, weighted: bool) -> dict | None:
    """The vote as answered; null when there is none (no neighbour carries a label)."""
    if vote is None:
        return None
    votes = {label: (round(v, 6) if weighted else int(v)) for label, v in vote.votes.items()}
    return {"label": vote.label, "confidence": round(vote.confidence, 6), "votes": votes,
            "weighted": weighted, "is_unknown": vote.is_unknown}


def search_json(result: SearchResult, k: int, root: str = "") -> dict:
    return {"k": k, "neighbors": [neighbor_json(i + 1, n, root) for i, n in enumerate(result.neighbors)],
            "prediction": prediction_json(result.vote, result.weighted)}


def item_json(item: ItemMeta, root: str = "") -> dict:
    return {"id": item.id, "label": label_json(item.label), "added_at": item.added_at,
            **item_urls(item.id, root)}


def added_json(result: AddResult, root: str = "") -> dict:
    """An upload's answer: the item (the existing one when ``skipped``) and the duplicate found, if any."""
    return {**item_json(result.item, root), "duplicate_of": result.duplicate_of,
            "duplicate_similarity": result.similarity,
            "duplicate_exact": result.exact if result.duplicate_of is not None else None,
            "duplicate_kind": result.verdict.kind if result.verdict is not None else None,
            "duplicate_confirmed": result.verdict.confirmed if result.verdict is not None else None,
            "skipped": result.skipped}

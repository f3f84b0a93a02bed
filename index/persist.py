"""The model-compatibility check of an index (its atomic file writes and sha256: :mod:`durablefile`)."""

from __future__ import annotations

import json
import logging

from index.errors import IndexMismatchError

logger = logging.getLogger(__name__)

MODEL_FIELDS = ("checkpoint_sha256", "embedding_dim", "metric", "preprocess")


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def validate_model_info(model_info: dict, dim: int) -> dict:
    """Check ``model_info`` names the identity fields and matches ``dim``; return a JSON-safe copy."""
    if not isinstance(model_info, dict):
        raise ValueError(f"model_info must be a dict, got {type(model_info).__name__}")
    missing = [f for f in MODEL_FIELDS if f not in model_info]
    if missing:
        raise ValueError(f"model_info lacks the field(s) {missing}; required: {list(MODEL_FIELDS)}")
    if model_info["embedding_dim"] != dim:
        raise ValueError(f"model_info embedding_dim={model_info['embedding_dim']!r} does not match dim={dim}")
    if not isinstance(model_info["preprocess"], dict):
        raise ValueError("model_info['preprocess'] must be a dict")
    try:
        return json.loads(json.dumps(model_info))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model_info must be JSON-serialisable: {exc}") from None


def check_model(stored: dict, expected: dict) -> None:
    """Raise ``IndexMismatchError`` naming the first identity field (``MODEL_FIELDS``) that differs."""
    for field in MODEL_FIELDS:
        if field not in expected:
            raise ValueError(f"expect_model lacks the field {field!r}; required: {list(MODEL_FIELDS)}")
        mine, theirs = stored.get(field), expected[field]
        if _canonical(mine) != _canonical(theirs):
            raise IndexMismatchError(field, mine, theirs)

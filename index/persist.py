"""File durability helpers (fsync, atomic replace, sha256) and the model-compatibility check of an index."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import BinaryIO

from index.errors import IndexMismatchError

logger = logging.getLogger(__name__)

MODEL_FIELDS = ("checkpoint_sha256", "embedding_dim", "metric", "preprocess")


def sha256_file(path: str) -> str:
    with open(path, "rb") as handle:
        return sha256_of(handle)


def sha256_of(handle: BinaryIO, chunk: int = 1 << 22) -> str:
    """sha256 of what is left to read in an open binary file (read in ``chunk``-byte blocks)."""
    digest = hashlib.sha256()
    while block := handle.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data) -> str:
    """sha256 of a bytes-like object (e.g. a ``uint8`` numpy array)."""
    return hashlib.sha256(memoryview(data)).hexdigest()


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str) -> None:
    """Make a rename or a new file in ``directory`` durable (the directory entry itself is synced)."""
    fsync_file(directory)


def write_file_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync the result, and rename it over ``path``."""
    tmp = path + ".tmp"
    write(tmp)
    fsync_file(tmp)
    os.replace(tmp, path)


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

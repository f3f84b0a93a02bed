"""Validation of the arrays and scalars crossing the public API of ``index`` (clear ``ValueError``s)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_vectors(x: object, dim: int, name: str = "vectors") -> np.ndarray:
    """Return ``x`` as a C-contiguous ``(n, dim) float32`` array, or raise ``ValueError`` saying what is wrong.

    Rejects non-arrays, other dtypes (no silent float64 -> float32 casts), wrong rank or width, NaN/inf.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of shape (n, {dim}), got {type(x).__name__}")
    if x.dtype != np.float32:
        raise ValueError(f"{name} must have dtype float32, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape (n, {dim}), got shape {x.shape}")
    if x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the index dimension), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(x)


def normalized(x: np.ndarray, name: str = "vectors") -> np.ndarray:
    """A row-wise L2-normalised copy of ``x: (n, d) float32``; zero rows are rejected."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has an all-zero row {int(np.flatnonzero(norms[:, 0] == 0)[0])}; "
                         "it has no direction to compare by cosine")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def check_positive_int(value: object, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_count(value: object, name: str) -> int:
    """``value`` as an int >= 0, or ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def check_ids(ids: object) -> np.ndarray:
    """Return ``ids`` (an int or a sequence/array of ints) as a ``(n,) int64`` array."""
    if isinstance(ids, int | np.integer) and not isinstance(ids, bool):
        return np.array([ids], dtype=np.int64)
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-D sequence of integers, got {arr.dtype} array of shape {arr.shape}")
    return arr.astype(np.int64)


def check_strings(values: object, n: int, name: str, *, optional: bool = False) -> list:
    """Return ``values`` as a list of ``n`` strings (``None`` entries allowed when ``optional``)."""
    if values is None and optional:
        return [None] * n
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
        raise ValueError(f"{name} must be a list of {n} strings, got {type(values).__name__}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but there are {n} vectors")
    for i, v in enumerate(values):
        if not (isinstance(v, str) or (optional and v is None)):
            raise ValueError(f"{name}[{i}] must be a string, got {type(v).__name__}")
    return values

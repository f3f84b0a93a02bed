"""The recall table: what the benchmark measured for each index setting at each collection size.

``index/recall_table.json`` ships in the package.  ``python -m bench.scale --n N --table`` writes its rows for
size ``N`` (replacing the rows of the same data, size and setting), with the machine it ran on.  Each row::

    {"data": "synthetic-128d", "n": 100000, "index_type": "ivfpq",
     "params": {"code": "PQ32x8", "nprobe": 16, "rerank": 100},          # index.config.setting_params
     "recall_at_10": 0.99, "p50_ms": 0.41, "bytes_per_vector": 41.3, "machine": "..."}

:func:`expected` answers for any size ``n``: per data set, the row measured at the smallest size >= ``n``
(recall falls as a collection grows, so a larger measurement is a lower bound), or the largest size measured
when ``n`` is at most :data:`EXTRAPOLATE` times it; then the worst of the data sets.  The ``auto`` rule
(:func:`index.config.choose_index_type`) and ``IndexStore.stats`` read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache

TABLE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recall_table.json")
EXTRAPOLATE = 10  # a row measured at size n answers for sizes up to 10 n


@dataclass(frozen=True)
class Expectation:
    """What a setting is expected to reach at ``n`` vectors: recall@10 against exact search, single-query
    latency through ``IndexStore.search`` (ms, on the table's machine), resident bytes per vector, and where
    that came from (``measured_n``, ``data``: the worst data set's row; ``extrapolated``: measured below n)."""

    n: int
    recall_at_10: float
    p50_ms: float | None
    bytes_per_vector: float | None
    measured_n: int | None
    data: str
    extrapolated: bool = False
    machine: str | None = None

    @classmethod
    def exact(cls, n: int) -> "Expectation":
        """Exact search, not measured: recall 1 by construction."""
        return cls(n, 1.0, None, None, None, "exact by construction")

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=4)
def load(path: str = TABLE_FILE) -> tuple[dict, ...]:
    """The rows of the table at ``path`` (none when the file is missing)."""
    try:
        with open(path) as handle:
            return tuple(json.load(handle)["rows"])
    except FileNotFoundError:
        return ()


def expected(index_type: str, params: dict, n: int, rows: tuple[dict, ...] | None = None) -> Expectation | None:
    """The :class:`Expectation` of ``index_type`` with ``params`` at ``n`` vectors from ``rows`` (default: the
    shipped table), or None when no data set measured that setting near ``n``."""
    rows = load() if rows is None else rows
    by_data: dict[str, list[dict]] = {}
    for row in rows:
        if row["index_type"] == index_type and row["params"] == params:
            by_data.setdefault(row["data"], []).append(row)
    picks = []
    for data_rows in by_data.values():
        above = [r for r in data_rows if r["n"] >= n]
        if above:
            picks.append((min(above, key=lambda r: r["n"]), False))
            continue
        largest = max(data_rows, key=lambda r: r["n"])
        if n <= EXTRAPOLATE * largest["n"]:
            picks.append((largest, True))
    if not picks:
        return None
    worst, extrapolated = min(picks, key=lambda p: p[0]["recall_at_10"])
    latencies = [_latency_at(r, n) for r, _ in picks if r.get("p50_ms") is not None]
    sizes = [r["bytes_per_vector"] for r, _ in picks if r.get("bytes_per_vector") is not None]
    return Expectation(n=n, recall_at_10=float(worst["recall_at_10"]), p50_ms=max(latencies) if latencies else None,
                       bytes_per_vector=max(sizes) if sizes else None, measured_n=int(worst["n"]),
                       data=worst["data"], extrapolated=extrapolated, machine=worst.get("machine"))


def _latency_at(row: dict, n: int) -> float:
    """A row's p50 latency carried to ``n`` vectors: exact search scans them all (linear in n); the others are
    taken as measured (HNSW and IVF grow slowly with n)."""
    if row["index_type"] == "flat":
        return round(row["p50_ms"] * n / row["n"], 3)
    return row["p50_ms"]


def merge(table: dict, rows: list[dict]) -> dict:
    """``table`` (``{"rows": [...], ...}``) with ``rows`` added, replacing rows of the same data, size, type
    and params; sorted by data, type and size."""
    def key(r: dict) -> tuple:
        return r["data"], r["n"], r["index_type"], json.dumps(r["params"], sort_keys=True)

    kept = {key(r): r for r in table.get("rows", [])}
    kept.update({key(r): r for r in rows})
    ordered = sorted(kept.values(), key=lambda r: (r["data"], r["index_type"], r["n"],
                                                   json.dumps(r["params"], sort_keys=True)))
    return {**table, "rows": ordered}

"""The concurrent soak: client threads mixing search, add, delete and similar against a real server.

Checked while it runs: every request gets its expected status (no error, no 5xx, no dropped connection);
every acknowledged add is found again at once by searching with its own bytes; no search that *started*
after a delete was acknowledged ever returns the deleted id.  Checked afterwards (and again after a
restart, by the caller): every acknowledged add that was not deleted is present with its label, every
acknowledged delete is gone (:func:`verify_items`).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from bench.reliability import corpus

K = 10


@dataclass
class SoakState:
    """What the clients were told: ``live`` maps acknowledged, undeleted ids to ``(label, image bytes)``;
    ``deleted`` maps acknowledged deletes to the monotonic time of their acknowledgement."""

    live: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    deleted: dict[int, float] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)
    not_found_after_add: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    recently_deleted: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, message: str) -> None:
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(message)
            self.counts["errors"] += 1


def unique_image(seed: int) -> bytes:
    """A PNG no other seed produces (random smooth pixels)."""
    return corpus.png(seed, size=(40, 40))


class _Client(threading.Thread):
    def __init__(self, n: int, base_url: str, token: str, state: SoakState, stop_at: float, seed: int,
                 queries: list[bytes], write_fraction: float | None = None) -> None:
        super().__init__(name=f"soak-client-{n}", daemon=True)
        self.write_fraction = write_fraction
        self.n, self.base_url, self.token, self.state = n, base_url, token, state
        self.stop_at, self.rng, self.queries = stop_at, random.Random(seed * 1000 + n), queries
        self.own: list[int] = []  # this client's live adds, oldest first (only it deletes them)
        self.next_image = (seed * 1000 + n) * 1_000_000
        self.http = requests.Session()

    def run(self) -> None:
        try:
            while time.monotonic() < self.stop_at:
                if self.write_fraction is not None:
                    self.step_with_write_fraction(self.write_fraction)
                    continue
                roll = self.rng.random()
                if roll < 0.5:
                    self.search()
                elif roll < 0.75:
                    self.add()
                elif roll < 0.9 and self.own:
                    self.delete()
                elif self.own:
                    self.similar()
                else:
                    self.search()
        finally:
            self.http.close()

    def step_with_write_fraction(self, fraction: float) -> None:
        """One request, a write with probability ``fraction`` (adds 60%, deletes 40%), else a read (search
        80%, similar 20%); an add is not followed by a check search here, to keep the mix as asked."""
        roll = self.rng.random()
        if roll < 0.6 * fraction or (roll < fraction and not self.own):
            self.add(check=False)
        elif roll < fraction:
            self.delete()
        elif self.own and self.rng.random() < 0.2:
            self.similar()
        else:
            self.search()

    def request(self, op: str, method: str, path: str, expected: int, **kwargs) -> requests.Response | None:
        started = time.perf_counter()
        # mostly a new connection per request, so that consecutive requests reach different workers
        http = self.http if self.rng.random() < 0.3 else requests
        try:
            response = http.request(method, self.base_url + path, timeout=120, **kwargs)
        except requests.RequestException as exc:
            self.state.error(f"{op}: {type(exc).__name__}: {exc}")
            return None
        with self.state.lock:
            self.state.counts[op] += 1
            self.state.counts["requests"] += 1
            self.state.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        if response.status_code != expected:
            self.state.error(f"{op} {path}: status {response.status_code}, expected {expected}: {response.text[:200]}")
            return None
        return response

    def search(self, data: bytes | None = None, *, op: str = "search") -> list[dict] | None:
        if data is None:  # a stock query, or the image of a recently deleted item (which must not come back)
            with self.state.lock:
                recent = self.state.recently_deleted[-32:]
            data = self.rng.choice(recent) if recent and self.rng.random() < 0.4 else self.rng.choice(self.queries)
        started = time.monotonic()
        response = self.request(op, "POST", f"/api/search?k={K}", 200,
                                files={"image": ("q.png", data, "image/png")})
        if response is None:
            return None
        neighbors = response.json()["neighbors"]
        self.check_not_deleted([n["id"] for n in neighbors], started, op)
        return neighbors

    def check_not_deleted(self, ids: list[int], started: float, op: str) -> None:
        with self.state.lock:
            for item_id in ids:
                acked = self.state.deleted.get(item_id)
                if acked is not None and acked < started:
                    self.state.resurrected.append(f"{op} started {started - acked:.3f} s after deleting {item_id} "
                                                  "returned it")

    def add(self, check: bool = True) -> None:
        self.next_image += 1
        data, label = unique_image(self.next_image), f"soak-{self.n}"
        response = self.request("add", "POST", "/api/images", 201, files={"image": ("a.png", data, "image/png")},
                                data={"label": label}, headers={"Authorization": f"Bearer {self.token}"})
        if response is None:
            return
        item_id = response.json()["id"]
        with self.state.lock:
            self.state.live[item_id] = (label, data)
        self.own.append(item_id)
        if not check:
            return
        neighbors = self.search(data, op="search-own")
        if neighbors is not None and not any(n["id"] == item_id and n["similarity"] > 0.999 for n in neighbors):
            with self.state.lock:
                self.state.not_found_after_add.append(f"added {item_id}, not among its own image's neighbours")

    def delete(self) -> None:
        item_id = self.own.pop(0)
        response = self.request("delete", "DELETE", f"/api/images/{item_id}", 200,
                                headers={"Authorization": f"Bearer {self.token}"})
        if response is None:
            return
        with self.state.lock:
            _label, data = self.state.live.pop(item_id)
            self.state.deleted[item_id] = time.monotonic()
            self.state.recently_deleted.append(data)

    def similar(self) -> None:
        item_id = self.rng.choice(self.own)
        started = time.monotonic()
        response = self.request("similar", "GET", f"/api/images/{item_id}/similar?k={K}", 200)
        if response is not None:
            self.check_not_deleted([n["id"] for n in response.json()["neighbors"]], started, "similar")


def run_soak(base_url: str, token: str, *, seconds: float, clients: int = 8, seed: int = 0,
             queries: list[bytes] | None = None, write_fraction: float | None = None) -> tuple[dict, SoakState]:
    """Run ``clients`` threads for ``seconds`` against ``base_url``; returns ``(summary, state)``.  Pass
    ``state`` to :func:`verify_items` after the run (and after a restart).  ``write_fraction``: the share
    of requests that are writes (default: the soak's own mix, where each add is checked by a search)."""
    queries = queries or [unique_image(seed * 7919 + i) for i in range(16)]
    state = SoakState()
    stop_at = time.monotonic() + seconds
    threads = [_Client(n, base_url, token, state, stop_at, seed, queries, write_fraction) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(state.latencies_ms)

    def percentile(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else 0.0

    summary = {
        "seconds": round(elapsed, 1), "clients": clients, "requests": state.counts["requests"],
        "requests_per_s": round(state.counts["requests"] / elapsed, 1),
        "by_operation": {op: state.counts[op] for op in ("search", "search-own", "add", "delete", "similar")},
        "errors": state.counts["errors"], "error_examples": state.errors[:10],
        "resurrected_deletes": len(state.resurrected), "resurrected_examples": state.resurrected[:5],
        "adds_not_found": len(state.not_found_after_add), "adds_not_found_examples": state.not_found_after_add[:5],
        "acknowledged_adds": state.counts["add"], "acknowledged_deletes": state.counts["delete"],
        "write_fraction": round((state.counts["add"] + state.counts["delete"]) / max(1, state.counts["requests"]), 3),
        "latency_ms": {"p50": percentile(0.5), "p95": percentile(0.95), "p99": percentile(0.99)},
    }
    return summary, state


def verify_items(base_url: str, live: dict[int, tuple[str, bytes | None]], deleted: set[int] | dict,
                 *, search_sample: int = 50, seed: int = 0) -> list[str]:
    """Problems found: a live item missing or relabelled, a deleted item still there, or (for a sample of
    ``search_sample`` live items) an item its own image no longer finds."""
    problems: list[str] = []
    with requests.Session() as http:
        for item_id, (label, _data) in sorted(live.items()):
            r = http.get(f"{base_url}/api/images/{item_id}/info", timeout=60)
            if r.status_code != 200 or r.json().get("label") != label:
                problems.append(f"acknowledged add {item_id} ({label}): info answered {r.status_code} {r.text[:100]}")
        for item_id in sorted(deleted):
            r = http.get(f"{base_url}/api/images/{item_id}/info", timeout=60)
            if r.status_code != 404:
                problems.append(f"acknowledged delete {item_id}: info answered {r.status_code}")
        with_image = sorted(i for i, (_label, data) in live.items() if data is not None)
        sample = random.Random(seed).sample(with_image, min(search_sample, len(with_image)))
        for item_id in sample:
            r = http.post(f"{base_url}/api/search?k={K}", files={"image": ("q.png", live[item_id][1], "image/png")},
                          timeout=60)
            hits = r.json().get("neighbors", []) if r.status_code == 200 else []
            if not any(n["id"] == item_id for n in hits):
                problems.append(f"acknowledged add {item_id} is not found by its own image")
    return problems

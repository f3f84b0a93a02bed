"""Disk faults under a real served index: a size-limited tmpfs that fills up (ENOSPC), and the same tmpfs
remounted read-only (EROFS).  Each trial counts the statuses seen, the acknowledged adds, and the adds a
restarted server finds once the fault is cleared.  Mounting needs root (:func:`mount_problem` says why not).

Used by ``tests/reliability/test_faults.py`` (short) and ``bench/faults.py`` (the figures).
"""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable

import numpy as np
import requests
from PIL import Image

from bench import copy_index
from bench.reliability.server import ServerProcess
from durablefile import TEMP_SUFFIX
from index.db import db_path
from index.keeper import SNAPSHOT_DIR

IMAGE_SIDE = 160  # random RGB noise: ~77 KB per PNG, so a few MB fill up in tens of adds


def mount_problem() -> str | None:
    """Why this process cannot mount a tmpfs (None when it can)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


def mount_tmpfs(folder: str, size_mb: int) -> None:
    os.makedirs(folder, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", folder], check=True)


def remount(folder: str, options: str) -> None:
    """``mount -o remount,<options>`` (``ro``, ``rw``, ``size=50m``) of the tmpfs at ``folder``."""
    subprocess.run(["mount", "-o", f"remount,{options}", folder], check=True)


def unmount(folder: str) -> None:
    subprocess.run(["umount", "-l", folder], check=False)


def noise_png(rng: np.random.Generator, side: int = IMAGE_SIDE) -> bytes:
    """A PNG of random RGB pixels (incompressible, and never a duplicate of another)."""
    pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def add(http: requests.Session, url: str, token: str, data: bytes, label: str) -> requests.Response:
    return http.post(url + "/api/images?duplicates=keep", data={"label": label}, timeout=120,
                     files={"image": ("a.png", data, "image/png")}, headers={"Authorization": f"Bearer {token}"})


def write_round(url: str, token: str, rng: np.random.Generator, *, adds: int, stop_after_refusals: int,
                prefix: str) -> dict:
    """Up to ``adds`` adds, each followed by a search and a health check, until ``stop_after_refusals``
    refusals in a row.  Returns statuses seen (adds, searches), acknowledged ``{id: label}``, the refusal
    bodies and the health answers met while writes were refused."""
    statuses: Counter = Counter()
    reads: Counter = Counter()
    acknowledged: dict[int, str] = {}
    refusals: list[dict] = []
    health_when_refused: list[dict] = []
    in_a_row = 0
    query = noise_png(rng, 32)
    with requests.Session() as http:
        for i in range(adds):
            label = f"{prefix}-{i}"
            r = add(http, url, token, noise_png(rng), label)
            statuses[r.status_code] += 1
            if r.status_code == 201:
                acknowledged[r.json()["id"]] = label
                in_a_row = 0
            else:
                refusals.append({"status": r.status_code, **r.json()})
                health_when_refused.append(http.get(url + "/api/health", timeout=30).json())
                in_a_row += 1
            reads[http.post(url + "/api/search?k=3", files={"image": ("q.png", query, "image/png")},
                            timeout=60).status_code] += 1
            if in_a_row >= stop_after_refusals:
                break
    return {"add_statuses": dict(statuses), "read_statuses": dict(reads), "acknowledged": acknowledged,
            "refusals": refusals, "health_when_refused": health_when_refused}


def found_after_restart(url: str, acknowledged: dict[int, str]) -> int:
    """How many acknowledged adds a (restarted) server serves with their label."""
    found = 0
    with requests.Session() as http:
        for item_id, label in acknowledged.items():
            r = http.get(f"{url}/api/images/{item_id}/info", timeout=60)
            found += r.status_code == 200 and r.json().get("label") == label
    return found


def leftovers(index_dir: str) -> dict:
    """Temporary files left anywhere in the index, and upload files no live item references."""
    from engine.engine import Engine

    temps = [os.path.join(folder, name) for folder, _dirs, files in os.walk(index_dir)
             for name in files if name.endswith(TEMP_SUFFIX)]
    engine = Engine.open(index_dir)
    try:
        orphans = engine.orphan_uploads()
    finally:
        engine.close()
    return {"temp_files": temps, "orphan_uploads": list(orphans)}


Starter = Callable[[str], ServerProcess]


def disk_full_trial(source_index: str, disk: str, start: Starter, *, size_mb: int, token: str, adds: int = 200,
                    seed: int = 0) -> dict:
    """Copy ``source_index`` onto a ``size_mb`` tmpfs mounted at ``disk``, serve it and add until the disk is full;
    then grow the tmpfs, restart, and count the acknowledged adds found."""
    mount_tmpfs(disk, size_mb)
    index_dir = copy_index(source_index, os.path.join(disk, "index"))
    rng = np.random.default_rng(seed)
    server = start(index_dir)
    try:
        full = write_round(server.url, token, rng, adds=adds, stop_after_refusals=5, prefix="full")
        remount(disk, f"size={size_mb * 4}m")  # space freed
        health_after = requests.get(server.url + "/api/health", timeout=30).json()
        server.stop()
        server = start(index_dir)
        found = found_after_restart(server.url, full["acknowledged"])
        after = write_round(server.url, token, rng, adds=2, stop_after_refusals=1, prefix="after")
        server.stop()
        left = leftovers(index_dir)
    finally:
        server.stop()
    return {**full, "found_after_recovery": found, "health_after_space_freed": health_after,
            "adds_after_recovery": after["add_statuses"], **left}


def read_only_trial(source_index: str, disk: str, start: Starter, *, token: str, adds: int = 3,
                    size_mb: int = 64, seed: int = 1) -> dict:
    """Serve a copy of ``source_index`` on a tmpfs at ``disk``, add, remount it read-only under a new server,
    add (refused) and read; then remount it read-write, restart, and count the acknowledged adds found.

    The server is restarted around the remount: a file system with files open for writing cannot be remounted
    read-only (EBUSY), so a read-only remount happens between servers, as after an operator's remount or a
    kernel's errors=remount-ro once the processes are restarted."""
    mount_tmpfs(disk, size_mb)
    index_dir = copy_index(source_index, os.path.join(disk, "index"))
    rng = np.random.default_rng(seed)
    server = start(index_dir)
    try:
        before = write_round(server.url, token, rng, adds=adds, stop_after_refusals=1, prefix="before")
        health_before = requests.get(server.url + "/api/health", timeout=30).json()
        server.stop()
        remount(disk, "ro")
        server = start(index_dir)
        refused = write_round(server.url, token, rng, adds=adds, stop_after_refusals=adds, prefix="ro")
        found_while_ro = found_after_restart(server.url, before["acknowledged"])
        server.stop()
        remount(disk, "rw")
        server = start(index_dir)
        acknowledged = {**before["acknowledged"], **refused["acknowledged"]}
        found = found_after_restart(server.url, acknowledged)
        after = write_round(server.url, token, rng, adds=1, stop_after_refusals=1, prefix="after")
        health_after = requests.get(server.url + "/api/health", timeout=30).json()
        server.stop()
        left = leftovers(index_dir)
    finally:
        server.stop()
    return {"add_statuses": refused["add_statuses"], "read_statuses": refused["read_statuses"],
            "refusals": refused["refusals"], "health_when_refused": refused["health_when_refused"],
            "health_before": health_before, "health_after": health_after, "acknowledged": acknowledged,
            "found_while_read_only": found_while_ro, "found_after_recovery": found,
            "adds_after_recovery": after["add_statuses"], **left}


FSYNC_SHIM_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                 "tests", "reliability", "fsync_delay.c")
FSYNC_DELAY_ENV = "SIMSEARCH_FSYNC_DELAY_FILE"


def overwrite(path: str, offset: int, size: int = 64) -> None:
    """Damage a file in place: ``size`` bytes of 0xA5 at ``offset``."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xa5" * size)


def root_page_offset(index_dir: str, name: str) -> int:
    """The byte offset of the root page of the table or index ``name`` in an index's database."""
    conn = sqlite3.connect(db_path(index_dir))
    try:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    finally:
        conn.close()
    return (root - 1) * page


def middle_page_offset(index_dir: str) -> int:
    """The byte offset of the page at the middle of an index's database (items' vectors fill most of it)."""
    conn = sqlite3.connect(db_path(index_dir))
    try:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return os.path.getsize(db_path(index_dir)) // 2 // page * page


def newest_snapshot_file(index_dir: str) -> str:
    """The path of an index's newest FAISS snapshot file."""
    folder = os.path.join(index_dir, SNAPSHOT_DIR)
    return os.path.join(folder, sorted(os.listdir(folder))[-1])


def build_fsync_shim(folder: str) -> str | None:
    """Compile the LD_PRELOAD shim that delays fsync (``tests/reliability/fsync_delay.c``); None without gcc."""
    if shutil.which("gcc") is None:
        return None
    target = os.path.join(folder, "fsync_delay.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", target, FSYNC_SHIM_SOURCE, "-ldl"], check=True)
    return target


def slow_fsync_trial(index_dir: str, work: str, start: Callable[..., ServerProcess], *, token: str,
                     delay_ms: int = 3000, busy_timeout_s: float = 1.0, writers: int = 4, seed: int = 2) -> dict:
    """Serve ``index_dir`` with every fsync stalled by ``delay_ms`` (an LD_PRELOAD shim) and a busy timeout of
    ``busy_timeout_s``: ``writers`` adds at once while one client searches; then the stall ends, the server
    restarts and the acknowledged adds are counted."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    shim = build_fsync_shim(work)
    delay_file = os.path.join(work, "fsync-delay-ms")
    with open(delay_file, "w") as handle:
        handle.write("0")
    env = {"LD_PRELOAD": shim, FSYNC_DELAY_ENV: delay_file, "SIMSEARCH_BUSY_TIMEOUT_S": str(busy_timeout_s)}
    rng = np.random.default_rng(seed)
    images = [noise_png(rng, 32) for _ in range(writers)]
    query = noise_png(rng, 32)
    server = start(index_dir, env=env)
    try:
        with open(delay_file, "w") as handle:
            handle.write(str(delay_ms))
        done = threading.Event()
        search_ms: list[float] = []
        reads: Counter = Counter()

        def search_loop() -> None:
            with requests.Session() as http:
                while not done.is_set():
                    started = time.perf_counter()
                    r = http.post(server.url + "/api/search?k=3", files={"image": ("q.png", query, "image/png")},
                                  timeout=60)
                    search_ms.append((time.perf_counter() - started) * 1000.0)
                    reads[r.status_code] += 1
                    time.sleep(0.05)

        def one(i: int) -> requests.Response:
            with requests.Session() as http:
                return add(http, server.url, token, images[i], f"slow-{i}")

        reader = threading.Thread(target=search_loop)
        reader.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            answers = list(pool.map(one, range(writers)))
        writes_s = time.perf_counter() - started
        done.set()
        reader.join()
        with open(delay_file, "w") as handle:
            handle.write("0")
        acknowledged = {r.json()["id"]: f"slow-{i}" for i, r in enumerate(answers) if r.status_code == 201}
        refusals = [{"status": r.status_code, "retry_after": r.headers.get("Retry-After"), **r.json()}
                    for r in answers if r.status_code != 201]
        server.stop()
        server = start(index_dir)
        found = found_after_restart(server.url, acknowledged)
        server.stop()
        left = leftovers(index_dir)
    finally:
        server.stop()
    return {"delay_ms": delay_ms, "busy_timeout_s": busy_timeout_s,
            "add_statuses": dict(Counter(r.status_code for r in answers)), "read_statuses": dict(reads),
            "searches": len(search_ms), "search_ms_max": round(max(search_ms), 1) if search_ms else None,
            "writes_s": round(writes_s, 2), "refusals": refusals, "acknowledged": acknowledged,
            "found_after_recovery": found, **left}

"""Every kind of writer at once: a real server (gunicorn workers) takes adds and deletes over HTTP while, in
other processes, ``simsearch index add`` appends a folder of images, ``simsearch index remove`` deletes
items and ``simsearch index compact`` rebuilds the index.

Afterwards every acknowledged write must hold on every worker (checked on fresh connections, so that the
requests reach both workers) and after a restart, and every writer must have succeeded.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import requests

from bench import REPO
from bench.reliability.server import ServerProcess
from bench.reliability.soak import unique_image
from index.location import open_store


@dataclass
class WriterLedger:
    """What the writers were told: ``live`` id -> label, ``deleted`` ids, and each writer's failures."""

    live: dict[int, str] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    images: dict[int, bytes] = field(default_factory=dict)  # what the API adds uploaded, to search with
    failures: list[str] = field(default_factory=list)
    api_adds: int = 0
    api_deletes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "simsearch.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _api_writer(url: str, token: str, ledger: WriterLedger, n_adds: int, seed: int) -> None:
    """``n_adds`` adds, and a delete of one of its own adds after every third; fresh connections each time."""
    rng = random.Random(seed)
    auth = {"Authorization": f"Bearer {token}"}
    own: list[int] = []
    for i in range(n_adds):
        label = f"api-{seed}-{i}"
        image = unique_image(seed * 10_000 + i)
        try:
            r = requests.post(f"{url}/api/images", headers=auth, data={"label": label}, timeout=120,
                              files={"image": ("a.png", image, "image/png")})
        except requests.RequestException as exc:
            with ledger.lock:
                ledger.failures.append(f"API add {label}: {exc}")
            continue
        if r.status_code != 201:
            with ledger.lock:
                ledger.failures.append(f"API add {label}: {r.status_code} {r.text[:200]}")
            continue
        with ledger.lock:
            ledger.live[r.json()["id"]] = label
            ledger.images[r.json()["id"]] = image
            ledger.api_adds += 1
        own.append(r.json()["id"])
        if i % 3 == 2 and own:
            victim = own.pop(rng.randrange(len(own)))
            try:
                r = requests.delete(f"{url}/api/images/{victim}", headers=auth, timeout=120)
            except requests.RequestException as exc:
                with ledger.lock:
                    ledger.failures.append(f"API delete {victim}: {exc}")
                continue
            with ledger.lock:
                if r.status_code == 200:
                    ledger.live.pop(victim, None)
                    ledger.deleted.add(victim)
                    ledger.api_deletes += 1
                else:
                    ledger.failures.append(f"API delete {victim}: {r.status_code} {r.text[:200]}")


def verify_on_workers(url: str, ledger: WriterLedger, *, rounds: int = 2) -> list[str]:
    """Ask for every acknowledged item ``rounds`` times on fresh connections (both workers answer): its
    metadata, and a search with its own image, which must find it (live) or not (deleted) through each
    worker's FAISS view, not only in the database."""
    problems = []
    for _ in range(rounds):
        for item_id, image in sorted(ledger.images.items()):
            r = requests.post(f"{url}/api/search?k=3", files={"image": ("q.png", image, "image/png")}, timeout=60,
                              headers={"Connection": "close"})
            found = r.status_code == 200 and any(n["id"] == item_id for n in r.json()["neighbors"])
            if item_id in ledger.live and not found:
                problems.append(f"acknowledged add {item_id} is not found by its own image")
            if item_id in ledger.deleted and found:
                problems.append(f"acknowledged delete {item_id} is still found by its image")
        for item_id, label in sorted(ledger.live.items()):
            r = requests.get(f"{url}/api/images/{item_id}/info", timeout=60, headers={"Connection": "close"})
            if r.status_code != 200 or r.json().get("label") != label:
                problems.append(f"acknowledged add {item_id} ({label}): {r.status_code} {r.text[:100]}")
        for item_id in sorted(ledger.deleted):
            r = requests.get(f"{url}/api/images/{item_id}/info", timeout=60, headers={"Connection": "close"})
            if r.status_code != 404:
                problems.append(f"acknowledged delete {item_id}: answered {r.status_code}")
    return problems


def verify_on_disk(index_dir: str, ledger: WriterLedger) -> list[str]:
    """Every acknowledged write in the store itself (an index directory or a Milvus collection)."""
    store = open_store(index_dir)
    try:
        problems = [f"acknowledged add {i} ({label}) missing on disk" for i, label in ledger.live.items()
                    if (meta := store.get(i)) is None or meta.label != label]
        problems += [f"acknowledged delete {i} back on disk" for i in ledger.deleted if store.get(i) is not None]
        rows = sum(1 for _ in store.iter_items())
        if rows != len(store):
            problems.append(f"the view holds {len(store)} live vectors, the database {rows} items")
    finally:
        store.close()
    return problems


def run_writers_trial(index_dir: str, token: str, images_folder: str, *, remove_ids: list[int],
                      api_writers: int = 3, adds_per_writer: int = 12, seed: int = 0,
                      server: ServerProcess | None = None) -> tuple[dict, WriterLedger]:
    """One trial on a running ``server`` (started here if None): API writers, then the three CLI writers
    started while the API writes.  Returns a JSON-able summary (``problems`` empty when all held)."""
    own_server = server is None
    server = server or ServerProcess(index_dir, token=token, workers=2, threads=4).start()
    ledger = WriterLedger()
    started = time.perf_counter()
    try:
        threads = [threading.Thread(target=_api_writer, args=(server.url, token, ledger, adds_per_writer,
                                                              seed * 100 + w), daemon=True)
                   for w in range(api_writers)]
        for thread in threads:
            thread.start()
        cli = {"add": _cli("index", "add", index_dir, "--data", images_folder, "--quiet", "--workers", "0"),
               "remove": _cli("index", "remove", index_dir, *map(str, remove_ids)),
               "compact": _cli("index", "compact", index_dir, "--force")}
        outputs = {name: proc.communicate(timeout=600) for name, proc in cli.items()}
        for thread in threads:
            thread.join(timeout=600)
        for name, proc in cli.items():
            if proc.returncode != 0:
                ledger.failures.append(f"simsearch index {name} exited {proc.returncode}: {outputs[name][1][-500:]}")
        cli_added = 0
        if cli["add"].returncode == 0:
            answer = json.loads(outputs["add"][0].strip().splitlines()[-1])
            cli_added = answer["added"]
            folder = os.path.join(os.path.realpath(images_folder), "")
            store = open_store(index_dir)
            try:  # the CLI's items are those whose image lies in its folder (ids need not be contiguous)
                found = {item.id: item.label for item in store.iter_items()
                         if os.path.realpath(item.path).startswith(folder)}
            finally:
                store.close()
            ledger.live.update(found)
            if len(found) != cli_added:
                ledger.failures.append(f"simsearch index add acknowledged {cli_added} items, {len(found)} are there")
        if cli["remove"].returncode == 0:
            removed = json.loads(outputs["remove"][0])["removed"]
            ledger.deleted.update(removed)
            for item_id in removed:
                ledger.live.pop(item_id, None)
        seconds = time.perf_counter() - started
        problems = list(ledger.failures) + verify_on_workers(server.url, ledger)
    finally:
        if own_server:
            server.stop()
    problems += verify_on_disk(index_dir, ledger)
    return {"api_adds": ledger.api_adds, "api_deletes": ledger.api_deletes, "cli_added": cli_added,
            "cli_removed": len(remove_ids), "writers_failed": len(ledger.failures), "seconds": round(seconds, 2),
            "problems": problems[:20]}, ledger

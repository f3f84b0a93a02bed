"""Crash safety: SIGKILL a real server (master and workers at once) at random moments while client threads
add and delete images (each one a durable SQLite transaction) and, in compaction trials, while another
process compacts the index in a loop (killed too); then check on disk that the index opens and holds every
add acknowledged before the kill and none of the acknowledged deletes, and that a compaction afterwards
leaves no orphan upload file."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import requests

from bench import REPO
from bench.reliability.server import ServerProcess, signal_group
from bench.reliability.soak import unique_image
from engine.layout import UPLOADS_DIR
from index import IndexStore
from index.keeper import SNAPSHOT_DIR

# a separate process that compacts the index over and over (forced rebuilds), as `simsearch index compact`
# would, while the server writes; killed with the server
_COMPACT_LOOP = """
import sys
from engine.engine import Engine
engine = Engine.open(sys.argv[1])
while True:
    engine.compact(force=True)
    print("compacted", flush=True)
"""

logger = logging.getLogger(__name__)


@dataclass
class Ledger:
    """Acknowledged writes over all trials: ``live`` id -> label, ``deleted`` ids, and ``in_doubt``: items
    whose delete was sent but never answered (the kill came first), which may or may not be gone."""

    live: dict[int, str] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    in_doubt: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _writer(base_url: str, token: str, ledger: Ledger, stop: threading.Event, rng: random.Random,
            first_image: int) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    own: list[int] = []
    image = first_image
    with requests.Session() as http:
        while not stop.is_set():
            try:
                if own and rng.random() < 0.25:
                    item_id = own.pop(rng.randrange(len(own)))
                    with ledger.lock:  # until answered, the delete may or may not happen
                        ledger.in_doubt[item_id] = ledger.live.pop(item_id)
                    r = http.delete(f"{base_url}/api/images/{item_id}", headers=auth, timeout=60)
                    with ledger.lock:
                        if r.status_code == 200:
                            ledger.in_doubt.pop(item_id)
                            ledger.deleted.add(item_id)
                        elif r.status_code < 500:  # refused: it must still be there
                            ledger.live[item_id] = ledger.in_doubt.pop(item_id)
                        # a 5xx stays in doubt: the delete may have committed before the failure
                else:
                    image += 1
                    label = f"crash-{image}"
                    upload = {"image": ("c.png", unique_image(image), "image/png")}
                    r = http.post(f"{base_url}/api/images", files=upload, data={"label": label}, headers=auth,
                                  timeout=60)
                    if r.status_code == 201:
                        item_id = r.json()["id"]
                        with ledger.lock:
                            ledger.live[item_id] = label
                        own.append(item_id)
            except requests.RequestException:
                return  # the server is gone: whatever was not acknowledged may or may not have landed


def check_on_disk(index_dir: str, ledger: Ledger) -> list[str]:
    """Open the index as a fresh process would and compare it with the acknowledged writes."""
    try:
        store = IndexStore.open(index_dir)
    except Exception as exc:  # noqa: BLE001 - any failure to load is exactly what this check reports
        return [f"index does not load: {type(exc).__name__}: {exc}"]
    problems = []
    try:
        rows = sum(1 for _ in store.iter_items())
        if len(store) != rows:  # live vectors in the FAISS view against rows in the truth
            problems.append(f"{len(store)} live vectors in the view but {rows} items in the database")
        with ledger.lock:
            live, deleted, in_doubt = dict(ledger.live), set(ledger.deleted), dict(ledger.in_doubt)
        for item_id, label in live.items():
            meta = store.get(item_id)
            if meta is None:
                problems.append(f"acknowledged add {item_id} is missing")
            elif meta.label != label:
                problems.append(f"acknowledged add {item_id} has label {meta.label!r}, not {label!r}")
            elif not os.path.isfile(meta.path):
                problems.append(f"acknowledged add {item_id}: its file {meta.path} is missing")
        problems += [f"acknowledged delete {i} is back" for i in deleted if store.get(i) is not None]
        for item_id, label in in_doubt.items():  # present or not, but never changed
            meta = store.get(item_id)
            if meta is not None and meta.label != label:
                problems.append(f"item {item_id} (delete unanswered) has label {meta.label!r}, not {label!r}")
    finally:
        store.close()
    return problems


def interrupted_write(index_dir: str) -> bool:
    """True when a kill left a write half done: a temporary file (an upload or a snapshot being written)
    or an upload file that no item references (written, but killed before its transaction committed)."""
    uploads = os.path.join(index_dir, UPLOADS_DIR)
    folders = [os.path.join(index_dir, SNAPSHOT_DIR), uploads]
    if any(name.endswith(".tmp") for folder in folders if os.path.isdir(folder) for name in os.listdir(folder)):
        return True
    return bool(orphan_uploads(index_dir))


def orphan_uploads(index_dir: str) -> list[str]:
    """Upload files that no live item references (the engine's own rule)."""
    from engine.engine import Engine

    engine = Engine.open(index_dir)
    try:
        return engine.orphan_uploads()
    finally:
        engine.close()


def start_compactor(index_dir: str, log_path: str) -> subprocess.Popen:
    """A process compacting ``index_dir`` (forced rebuilds) over and over; it prints a line per compaction
    into ``log_path``.  Stop it with :func:`kill_compactor`."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-c", _COMPACT_LOOP, index_dir], stdout=log, stderr=log, env=env,
                                start_new_session=True)


def kill_compactor(compactor: subprocess.Popen) -> bool:
    """SIGKILL the compactor; returns whether it was still running (not crashed)."""
    running = compactor.poll() is None
    signal_group(compactor, signal.SIGKILL)
    compactor.wait()
    return running


def run_crash_trials(index_dir: str, token: str, *, kills: int, compaction_kills: int = 0, seed: int = 0,
                     writers: int = 4, min_delay_s: float = 0.3, max_delay_s: float = 3.0,
                     workers: int = 2) -> tuple[dict, Ledger]:
    """``kills + compaction_kills`` trials of: start the server, let ``writers`` threads add and delete (and,
    in the last ``compaction_kills`` trials, another process compact in a loop), SIGKILL everything after a
    random delay, check the index on disk.  At the end, compact with no grace period (nothing is writing)
    and check that no orphan upload file survives.  Returns a JSON-able summary and the ledger of
    acknowledged writes (to check again through a restarted server)."""
    rng = random.Random(seed)
    ledger = Ledger()
    problems: list[str] = []
    survived = mid_write = compactions_killed = 0
    delays = []
    with tempfile.TemporaryDirectory(prefix="simsearch-crash-logs-") as logs:
        for trial in range(kills + compaction_kills):
            server = ServerProcess(index_dir, token=token, workers=workers, threads=4,
                                   log_path=os.path.join(logs, f"server-{trial}.log")).start()
            compactor = (start_compactor(index_dir, os.path.join(logs, f"compact-{trial}.log"))
                         if trial >= kills else None)
            stop = threading.Event()
            threads = [threading.Thread(target=_writer, daemon=True,
                                        args=(server.url, token, ledger, stop, random.Random(rng.random()),
                                              (seed * 100 + trial) * 100_000 + w * 10_000))
                       for w in range(writers)]
            for thread in threads:
                thread.start()
            delay = rng.uniform(min_delay_s, max_delay_s)
            delays.append(delay)
            time.sleep(delay)
            if compactor is not None:
                compactions_killed += kill_compactor(compactor)
            server.kill()  # SIGKILL to master and workers, mid-request
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
            mid_write += interrupted_write(index_dir)
            found = check_on_disk(index_dir, ledger)
            if found:
                problems += [f"kill {trial + 1}: {p}" for p in found]
            else:
                survived += 1
            logger.info("kill %d/%d after %.2f s: %s", trial + 1, kills + compaction_kills, delay,
                        "ok" if not found else found[:3])
    from engine.engine import Engine

    orphans_before = len(orphan_uploads(index_dir))
    engine = Engine.open(index_dir)
    try:  # deletes committed but killed before their answer: the reason they are in doubt, not lost
        landed = sum(engine.get(item_id) is None for item_id in ledger.in_doubt)
        engine.compact(orphan_grace_s=0.0)
    finally:
        engine.close()
    orphans_after = orphan_uploads(index_dir)
    problems += [f"orphan upload {name} survived compaction" for name in orphans_after]
    problems += check_on_disk(index_dir, ledger)
    return {"kills": kills, "compaction_kills": compaction_kills, "compactions_running_at_kill": compactions_killed,
            "kills_survived": survived, "acknowledged_adds_live": len(ledger.live),
            "orphan_uploads_before_compaction": orphans_before, "orphan_uploads_after_compaction": len(orphans_after),
            "acknowledged_deletes": len(ledger.deleted), "kills_inside_a_write": mid_write,
            "deletes_unanswered_at_kill": len(ledger.in_doubt), "unanswered_deletes_that_landed": landed,
            "lost_items": sum("missing" in p for p in problems),
            "problems": problems[:20], "mean_delay_s": round(sum(delays) / max(1, len(delays)), 2)}, ledger

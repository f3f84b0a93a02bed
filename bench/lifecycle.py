"""Figure: the model lifecycle behind a live server (issue 25).  ``simsearch serve`` (gunicorn) serves an alias;
the index it names is re-embedded with another checkpoint, the alias switched to the new index and rolled back.

``--mode load``: under ``wrk`` search load (8 connections) on the index given (the 60k Fashion-MNIST demo
index), with API adds and deletes running: p50/p99 and failed requests before, during the re-embed, during the
switch and during the rollback, all in one run; then every acknowledged write is checked in the final index.

``--mode trials``: ``--trials`` switches in a row on a small index (``--subset`` items of the same images),
alternating two checkpoints.  In each: a thread adds and deletes through the API, a CLI ``index add`` runs,
the re-embed is SIGKILLed at a random moment and run again (it resumes), then ``alias set`` switches while the
writes go on.  Each trial checks that every acknowledged write is in the new index and no delete came back.

    .venv/bin/python -m bench.lifecycle --mode load --index runs/demo/index \
        --checkpoint runs/matrix/fashion-mnist-native/model.pt
    .venv/bin/python -m bench.lifecycle --mode trials --trials 20 --index runs/demo/index \
        --checkpoint runs/matrix/fashion-mnist-native/model.pt
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

from bench import REPO
from bench.api_load import LUA, run_wrk
from bench.machine import emit
from bench.reliability.server import ServerProcess

TOKEN = "lifecycle-bench-token-51f0"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class ApiWriter(threading.Thread):
    """Adds images through ``POST /api/images`` and deletes every third one it added, until stopped.
    ``added``: acknowledged ids; ``deleted``: ids whose DELETE was acknowledged; ``failures``: anything else."""

    def __init__(self, url: str, images: list[Path], *, pause_s: float = 0.05, seed: int = 0) -> None:
        super().__init__(name="lifecycle-writer", daemon=True)
        self.url, self.images, self.pause_s = url, images, pause_s
        self.rng = np.random.default_rng(seed)
        self.stop_event = threading.Event()
        self.added: list[int] = []
        self.deleted: list[int] = []
        self.failures: list[str] = []
        self.latencies_ms: list[float] = []

    def run(self) -> None:
        with requests.Session() as http:
            i = 0
            while not self.stop_event.is_set():
                i += 1
                path = self.images[int(self.rng.integers(len(self.images)))]
                started = time.perf_counter()
                try:
                    r = http.post(f"{self.url}/api/images", headers=AUTH, data={"label": "lifecycle"},
                                  files={"image": (path.name, path.read_bytes(), "image/png")}, timeout=120)
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
                    if r.status_code != 201:
                        self.failures.append(f"add {r.status_code} {r.text[:200]}")
                    else:
                        self.added.append(int(r.json()["id"]))
                    if i % 3 == 0 and self.added:
                        victim = self.added[-2] if len(self.added) > 1 else self.added[-1]
                        if victim not in self.deleted:
                            d = http.delete(f"{self.url}/api/images/{victim}", headers=AUTH, timeout=120)
                            if d.status_code in (200, 204):
                                self.deleted.append(victim)
                            else:
                                self.failures.append(f"delete {d.status_code} {d.text[:200]}")
                except requests.RequestException as exc:
                    self.failures.append(f"request: {exc}")
                self.stop_event.wait(self.pause_s)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=180)


def simsearch(*args: str, check: bool = True, timeout: float = 1800) -> dict:
    """Run a ``simsearch`` command of this checkout; its JSON answer."""
    done = subprocess.run([sys.executable, "-m", "simsearch.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, "PYTHONPATH": REPO})
    if check and done.returncode:
        raise RuntimeError(f"simsearch {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout) if done.stdout.strip().startswith(("{", "[")) else {}


def reembed_with_kill(alias: str, checkpoint: str, out: str, kill_after_s: float | None, chunk: int = 4096,
                      home: str | None = None) -> dict:
    """``index reembed``, SIGKILLed ``kill_after_s`` after its first step committed (if given: in the middle of
    the copy), then run again to the end (it resumes)."""
    command = [sys.executable, "-m", "simsearch.cli", "index", "reembed", alias, "--checkpoint", checkpoint,
               "--out", out, "--quiet", "--runtime", "torch", "--chunk", str(chunk)] + (["--home", home] if home else [])
    killed = False
    items_at_kill = None
    started = time.perf_counter()
    if kill_after_s is not None:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": REPO})
        while proc.poll() is None and item_count(out) == 0:
            time.sleep(0.02)
        try:
            proc.wait(timeout=kill_after_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
            items_at_kill = item_count(out)
    answer = simsearch(*command[3:])
    return {"killed": killed, "items_at_kill": items_at_kill, "resumed": bool(answer.get("resumed")),
            "items": answer.get("items"), "seconds": round(time.perf_counter() - started, 2),
            "caught_up": answer.get("caught_up")}


def item_count(location: str) -> int:
    """Items in an index right now (0 while it does not exist); an index directory is read read-only."""
    import sqlite3

    if location.startswith("milvus://"):
        from index.location import open_store

        try:
            store = open_store(location)
        except Exception:  # noqa: BLE001 - not created yet
            return 0
        try:
            return len(store)
        finally:
            store.close()
    path = os.path.join(location, "store.sqlite")
    if not os.path.exists(path):
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
    except sqlite3.Error:
        return 0


def store_ids(location: str) -> set[int]:
    from index.location import open_store

    store = open_store(location)
    try:
        return {int(i) for i in store.live_ids()}
    finally:
        store.close()


def label_count(location: str, label: str) -> int:
    from index.location import open_store

    store = open_store(location)
    try:
        return store.label_counts().get(label, 0)
    finally:
        store.close()


class Places:
    """Where the bench's indexes live: folders under ``work``, or collections on a milvus-lite server."""

    def __init__(self, work: Path, milvus_port: int | None = None) -> None:
        self.work, self.port = work, milvus_port

    def index(self, name: str) -> tuple[str, list[str]]:
        """(location, the ``--home`` arguments a command creating it needs)."""
        if self.port is None:
            return str(self.work / name), []
        return f"milvus://127.0.0.1:{self.port}/{name}", ["--home", str(self.work / f"home-{name}")]

    def alias(self) -> str:
        return str(self.work / "live") if self.port is None else f"milvus://127.0.0.1:{self.port}/live"

    def first(self, source: str, name: str = "v1") -> str:
        """The bench's first index: a copy of ``source`` (a folder copy, or ``index copy`` into Milvus, HNSW)."""
        location, home = self.index(name)
        if self.port is None:
            shutil.copytree(source, location, ignore=shutil.ignore_patterns("report"))
        else:
            simsearch("index", "copy", source, location, *home, "--type", "hnsw", "--quiet")
        return location


def check_writes(target: str, acknowledged: list[int], deleted: list[int], cli_label: str | None = None,
                 cli_added: int = 0) -> dict:
    """Every acknowledged add (not deleted since) is in ``target``, no acknowledged delete is; the CLI's adds are
    counted by their label (``cli_added`` of them)."""
    ids = store_ids(target)
    kept = set(acknowledged) - set(deleted)
    out = {"acknowledged_adds": len(acknowledged), "acknowledged_deletes": len(deleted),
           "missing": sorted(kept - ids)[:20], "missing_count": len(kept - ids),
           "deletes_back": sorted(set(deleted) & ids)[:20], "deletes_back_count": len(set(deleted) & ids)}
    if cli_label is not None:
        found = label_count(target, cli_label)
        out.update(cli_added=cli_added, cli_missing=cli_added - found)
        out["missing_count"] += max(cli_added - found, 0)
    return out


def health_targets(url: str, tries: int = 40) -> dict[int, str]:
    """The target each worker reports, by pid (asked ``tries`` times, to reach every worker)."""
    seen: dict[int, str] = {}
    for _ in range(tries):  # a new connection each time: a kept-alive one would stay with one worker
        answer = requests.get(f"{url}/api/health", headers={"Connection": "close"}, timeout=10).json()
        seen[answer["pid"]] = answer.get("alias", {}).get("target")
    return seen


def wait_for_workers(url: str, target: str, workers: int = 2, timeout: float = 120.0) -> float:
    """Seconds until each of the ``workers`` worker processes reports ``target``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        seen = health_targets(url, 20)
        if len(seen) >= workers and set(seen.values()) == {target}:
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"the workers did not all move to {target} in {timeout:.0f} s")


def wrk_during(url: str, script: str, duration: int, action=None, delay_s: float = 5.0) -> tuple[dict, object]:
    """wrk for ``duration`` seconds; ``action()`` runs ``delay_s`` into it; (wrk result, action's result)."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(run_wrk(url, script, 8, duration, 2)))
    thread.start()
    result = None
    if action is not None:
        time.sleep(delay_s)
        result = action()
    thread.join()
    out["failed"] = out["status_errors"] + out["socket_errors"]
    return out, result


def small_index(index: str, places: Places, subset: int) -> str:
    """A ``subset``-item index of the same images, built with the index's own model."""
    csv = index_images(index, subset, places.work / "images")
    location, home = places.index("v0")
    simsearch("index", "build", "--checkpoint", os.path.join(index, "model.pt"), "--data", csv, "--out", location,
              *home, "--duplicates", "keep", "--quiet", "--runtime", "torch")
    return location


def index_images(index: str, n: int, out: Path, label: str | None = None) -> str:
    """A CSV of ``n`` of the index's images (path,label; ``label`` instead of theirs if given), seeded."""
    from index.location import open_store

    store = open_store(index)
    try:
        rng = np.random.default_rng(0)
        ids = store.random_ids(n, rng)
        metas = store.get_many(ids)
    finally:
        store.close()
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "images.csv"
    csv.write_text("path,label\n" + "".join(f"{m.path},{label or m.label}\n" for m in metas.values()))
    return str(csv)


def query_images(n: int) -> list[Path]:
    root = Path(REPO) / "data" / "fashion-mnist-png" / "test"
    files = sorted(root.rglob("*.png"))
    if not files:
        raise SystemExit(f"no PNGs under {root}: bash scripts/ensure_data.sh")
    rng = np.random.default_rng(1)
    return [files[i] for i in rng.choice(len(files), size=min(n, len(files)), replace=False)]


def mode_load(args, places: Places) -> dict:
    work = places.work
    v1 = places.first(args.index)
    alias = places.alias()
    simsearch("alias", "set", alias, v1)
    images = query_images(200)
    lua = work / "search.lua"
    lua.write_text(LUA % {"mime": "image/png", "image": str(images[0]), "k": 10})
    v2, home = places.index("v2")
    out = {}
    with ServerProcess(alias, token=TOKEN, workers=2, threads=4, log_path=str(work / "server.log")) as server:
        run_wrk(server.url, str(lua), 8, 3, 2)  # warm-up
        out["before"], _ = wrk_during(server.url, str(lua), args.duration)
        writer = ApiWriter(server.url, images)
        writer.start()
        cli_csv = index_images(args.index, 50, work / "cli", label="cli")
        started = time.perf_counter()
        out["during_reembed"], reembed = wrk_during(server.url, str(lua), args.duration, lambda: reembed_with_kill(
            alias, args.checkpoint, v2, None, home=home[1] if home else None), 1.0)
        out["reembed"] = {**reembed, "wall_s": round(time.perf_counter() - started, 1)}
        cli_add = simsearch("index", "add", alias, "--data", cli_csv, "--quiet", "--runtime", "torch")
        out["during_switch"], switched = wrk_during(
            server.url, str(lua), args.duration, lambda: simsearch("alias", "set", alias, v2))
        out["switch"] = {"seconds": switched["seconds"], "caught_up": switched["caught_up"],
                         "workers_moved_after_s": round(wait_for_workers(server.url, switched["target"]), 2)}
        out["during_rollback"], rolled = wrk_during(
            server.url, str(lua), args.duration, lambda: simsearch("alias", "set", alias, "--previous"))
        out["rollback"] = {"seconds": rolled["seconds"], "caught_up": rolled["caught_up"],
                           "workers_moved_after_s": round(wait_for_workers(server.url, rolled["target"]), 2)}
        writer.stop()
        out["writes"] = {**check_writes(rolled["target"], writer.added, writer.deleted, "cli", cli_add["added"]),
                         "api_write_failures": writer.failures[:5], "api_write_failure_count": len(writer.failures),
                         "api_write_p99_ms": round(float(np.percentile(writer.latencies_ms, 99)), 1)}
    return out


def mode_trials(args, places: Places) -> dict:
    work = places.work
    base = small_index(args.index, places, args.subset)
    alias = places.alias()
    simsearch("alias", "set", alias, base)
    checkpoints = [args.checkpoint, os.path.join(args.index, "model.pt")]
    images = query_images(200)
    rng = np.random.default_rng(args.seed)
    trials = []
    with ServerProcess(alias, token=TOKEN, workers=2, threads=4, log_path=str(work / "server.log")) as server:
        for t in range(args.trials):
            writer = ApiWriter(server.url, images, seed=t, pause_s=0.2)
            writer.start()
            out, home = places.index(f"v{t + 1}")
            kill_after = float(rng.uniform(0.0, 1.0))
            cli = {}
            cli_csv = index_images(args.index, 20, work / f"cli{t}", label=f"cli-{t}")
            cli_thread = threading.Thread(target=lambda: cli.update(simsearch(
                "index", "add", alias, "--data", cli_csv, "--quiet", "--runtime", "torch")))
            cli_thread.start()
            reembed = reembed_with_kill(alias, checkpoints[t % 2], out, kill_after, chunk=128,
                                        home=home[1] if home else None)
            cli_thread.join()
            switched = simsearch("alias", "set", alias, out)
            time.sleep(1.0)
            writer.stop()
            checked = check_writes(out, writer.added, writer.deleted, f"cli-{t}", cli.get("added", 0))
            trials.append({"trial": t + 1, "kill_after_s": round(kill_after, 2), **reembed,
                           "switch_s": switched["seconds"], "api_failures": len(writer.failures), **checked})
            print(json.dumps(trials[-1]), flush=True)
    ok = [t for t in trials if t["missing_count"] == 0 and t["deletes_back_count"] == 0 and t["api_failures"] == 0]
    return {"trials": trials, "trials_ok": len(ok), "killed_and_resumed": sum(t["killed"] and t["resumed"] for t in trials),
            "acknowledged_adds": sum(t["acknowledged_adds"] + t["cli_added"] for t in trials),
            "acknowledged_deletes": sum(t["acknowledged_deletes"] for t in trials),
            "missing": sum(t["missing_count"] for t in trials),
            "deletes_back": sum(t["deletes_back_count"] for t in trials)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("load", "trials"), required=True)
    parser.add_argument("--backend", choices=("embedded", "milvus"), default="embedded",
                        help="index folders and an alias folder, or collections and a Milvus alias on a milvus-lite "
                             "server started for the run")
    parser.add_argument("--index", default="runs/demo/index", help="the index to start from (it is copied)")
    parser.add_argument("--checkpoint", default="runs/matrix/fashion-mnist-native/model.pt",
                        help="the other model to re-embed with")
    parser.add_argument("--duration", type=int, default=20, help="seconds of each wrk window (load mode)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--subset", type=int, default=2000, help="items of the trials' index")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if args.mode == "load" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: bash scripts/bench_setup.sh")
    args.index, args.checkpoint = os.path.abspath(args.index), os.path.abspath(args.checkpoint)
    work = Path(tempfile.mkdtemp(prefix="simsearch-lifecycle-"))
    try:
        with contextlib.ExitStack() as stack:
            port = None
            if args.backend == "milvus":
                from bench.milvus_servers import milvus_lite_server

                port = stack.enter_context(milvus_lite_server(work / "milvus")).port
            places = Places(work, port)
            result = mode_load(args, places) if args.mode == "load" else mode_trials(args, places)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    command = f"python -m bench.lifecycle --mode {args.mode} --backend {args.backend}" + (
        f" --trials {args.trials} --subset {args.subset}" if args.mode == "trials" else f" --duration {args.duration}")
    emit({"figure": f"model lifecycle behind simsearch serve ({args.mode}, {args.backend})", "command": command,
          "index": args.index, "checkpoint": args.checkpoint, "backend": args.backend, **result},
         os.path.join(REPO, "bench", "results", f"lifecycle_{args.mode}_{args.backend}.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

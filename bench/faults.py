"""Figure: disk faults under a real served index (``docs/benchmarks.md``, "Faults").  Needs root (tmpfs mounts)
and gcc (the fsync shim).  Per fault: the statuses seen, the acknowledged adds, and the adds found after
recovery (the harness of ``tests/reliability/test_faults.py`` and ``test_slow_fsync.py``, at full length):

1. disk full: the index on a tmpfs with ``--headroom-mb`` free, adds of 77 KB noise PNGs until 5 refusals in a
   row; the tmpfs grows, the server restarts;
2. read-only: the tmpfs remounted read-only under a restarted server; then read-write again;
3. slow fsync: every fsync stalled 3 s, busy timeout 1 s, 4 adds at once while a client searches;
4. damaged files: bytes overwritten in the newest snapshot, in the label index's root page and in the 8 KB at
   the middle of the database, each in its own copy, then ``simsearch index check`` and ``--repair``.

    .venv/bin/python -m bench.faults [--index runs/demo/index] [--out bench/results/faults.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile

from bench import DEMO_INDEX, REPO, copy_index
from bench.machine import emit
from bench.reliability.faults import (disk_full_trial, middle_page_offset, mount_problem, newest_snapshot_file,
                                      overwrite, read_only_trial, root_page_offset, slow_fsync_trial, unmount)
from bench.reliability.server import ServerProcess
from index import IndexStore, IndexStoreError
from index.check import check_store, repair_store
from index.db import db_path

TOKEN = "bench-faults-" + os.urandom(8).hex()


def _size_mb(folder: str) -> int:
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _s, files in os.walk(folder) for f in files)
    return total // (1 << 20) + 1


def _brief(result: dict) -> dict:
    """The figures of a trial (without the per-request detail)."""
    keep = ("add_statuses", "read_statuses", "found_while_read_only", "found_after_recovery", "adds_after_recovery",
            "search_ms_max", "writes_s", "delay_ms", "busy_timeout_s")
    out = {k: result[k] for k in keep if k in result}
    out["acknowledged"] = len(result["acknowledged"])
    out["refusal_messages"] = sorted({r["error"] for r in result.get("refusals", [])})
    out["health_when_refused"] = sorted({h.get("write_problem", "") for h in result.get("health_when_refused", [])})
    out["temp_files_left"] = len(result["temp_files"])
    out["orphan_uploads_left"] = len(result["orphan_uploads"])
    return out








def _items(index_dir: str) -> int | str:
    try:
        store = IndexStore.open(index_dir)
    except IndexStoreError as exc:
        return f"refused: {type(exc).__name__}"
    try:
        return len(store)
    finally:
        store.close()


def damaged_files(source: str, work: str) -> dict:
    """Each damage on its own copy: what check says, what --repair does, and the items before and after."""
    out = {}
    for name, damage in (("snapshot", lambda d: overwrite(newest_snapshot_file(d), 4096, 64)),
                         ("label index page", lambda d: overwrite(db_path(d), root_page_offset(d, "items_label") + 8,
                                                                   256)),
                         ("middle of the database", lambda d: overwrite(db_path(d), middle_page_offset(d), 8192))):
        index_dir = copy_index(source, os.path.join(work, name.replace(" ", "-")))
        items_before = _items(index_dir)
        damage(index_dir)
        opened = _items(index_dir)
        check = check_store(index_dir)
        repaired = repair_store(index_dir)
        out[name] = {"items_before": items_before, "open_while_damaged": opened, "check_damaged": check.damaged,
                     "check_line": check.summary(), "repaired": repaired.repaired,
                     "damaged_after_repair": repaired.damaged, "items_after_repair": _items(index_dir)}
    return out




def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=DEMO_INDEX)
    parser.add_argument("--headroom-mb", type=int, default=6, help="free space on the full disk's tmpfs")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "faults.json"))
    args = parser.parse_args(argv)
    problem = mount_problem()
    if problem:
        raise SystemExit(f"bench.faults: {problem}")

    def start(index_dir: str, **options) -> ServerProcess:
        return ServerProcess(index_dir, token=TOKEN, workers=1, threads=8, **options).start()

    size = _size_mb(args.index)
    with tempfile.TemporaryDirectory(prefix="simsearch-faults-") as work:
        figures = {"index": os.path.abspath(args.index), "index_items": _items(args.index), "index_mb": size}
        disk = os.path.join(work, "full")
        try:
            figures["disk_full"] = _brief(disk_full_trial(args.index, disk, start, size_mb=size + args.headroom_mb,
                                                          token=TOKEN, adds=400))
        finally:
            unmount(disk)
        disk = os.path.join(work, "ro")
        try:
            figures["read_only"] = _brief(read_only_trial(args.index, disk, start, token=TOKEN, adds=5,
                                                          size_mb=size + 32))
        finally:
            unmount(disk)
        slow = copy_index(args.index, os.path.join(work, "slow"))
        figures["slow_fsync"] = _brief(slow_fsync_trial(slow, work, start, token=TOKEN))
        figures["damaged_files"] = damaged_files(args.index, os.path.join(work, "damaged"))
    emit(figures, args.out)


if __name__ == "__main__":
    main()

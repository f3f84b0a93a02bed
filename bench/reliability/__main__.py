"""The reliability and security figures (issue 6), each suite at full length against real servers:

    python -m bench.reliability [--index runs/fmnist-index] [--soak-seconds 60] [--kills 20]
                                [--schema-examples 200] [--fuzz-inputs 3000]

1. bad input: every generated bad, hostile or odd upload, parameter and id to every endpoint that takes it;
2. schemathesis against ``/openapi.json`` (all checks);
3. decoder fuzzing: mutated image files through decode + preprocessing, time and memory bounded per input;
4. soak: 8 client threads mixing search, add, delete and similar for 60 s, then a restart;
5. crash: SIGKILL the server (master and workers) at random moments during adds and deletes, and during
   compactions run by another process.

The index is copied to a temporary folder first; the one given is never written.  Prints JSON (with the
machine) and writes ``bench/results/reliability.json``.  The fast versions of the same suites run in CI
(``tests/reliability``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench import REPO, copy_index
from bench.machine import emit
from bench.reliability.badinput import run_bad_inputs
from bench.reliability.crash import kill_compactor, run_crash_trials, start_compactor
from bench.reliability.server import ServerProcess
from bench.reliability.soak import run_soak, verify_items
from index.db import DB_FILE

TOKEN = "bench-reliability-token-" + os.urandom(8).hex()


def _timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - started, 1)


def bad_input(index_dir: str, workdir: str) -> dict:
    with ServerProcess(index_dir, token=TOKEN, extra_args=("--max-upload-mb", "1"),
                       log_path=os.path.join(workdir, "bad_input.log")) as server:
        summary, seconds = _timed(run_bad_inputs, server.url, index_dir, TOKEN)
        alive = server.alive()
    log = server.log()
    return {**summary, "seconds": seconds, "server_alive_after": alive,
            "token_in_log": TOKEN in log, "traceback_in_log": "Traceback" in log}


def schema_fuzz(index_dir: str, workdir: str, examples: int, seed: int) -> dict:
    from bench.reliability.schema_fuzz import run_schema_fuzz

    with ServerProcess(index_dir, token=TOKEN, log_path=os.path.join(workdir, "schema.log")) as server:
        summary, seconds = _timed(run_schema_fuzz, server.url, TOKEN, max_examples=examples, seed=seed)
    return {**summary, "seconds": seconds, "token_in_log": TOKEN in server.log()}


def decode_fuzz(inputs: int, seed: int) -> dict:
    from bench.reliability.decode_fuzz import run_decode_fuzz

    summary, seconds = _timed(run_decode_fuzz, n_inputs=inputs, seed=seed)
    return {**summary, "seconds": seconds}


def soak(index_dir: str, workdir: str, seconds: float, clients: int, seed: int) -> dict:
    """The soak, while another process compacts the index over and over; then a restart."""
    log = os.path.join(workdir, "soak-compact.log")
    with ServerProcess(index_dir, token=TOKEN, log_path=os.path.join(workdir, "soak.log")) as server:
        compactor = start_compactor(index_dir, log)
        try:
            summary, state = run_soak(server.url, TOKEN, seconds=seconds, clients=clients, seed=seed)
        finally:
            compactor_survived = kill_compactor(compactor)
        before_restart = verify_items(server.url, state.live, state.deleted, search_sample=200)
    with ServerProcess(index_dir, token=TOKEN, log_path=os.path.join(workdir, "soak-restart.log")) as server:
        after_restart = verify_items(server.url, state.live, state.deleted, search_sample=200)
    with open(log) as handle:
        compactions = handle.read().count("compacted")
    return {**summary, "compactions_during_soak": compactions, "compactor_survived": compactor_survived,
            "problems_before_restart": before_restart[:10], "problems_after_restart": after_restart[:10],
            "lost_after_restart": sum("acknowledged add" in p for p in after_restart),
            "live_items_checked": len(state.live), "deleted_items_checked": len(state.deleted)}


def crash(index_dir: str, kills: int, compaction_kills: int, seed: int) -> dict:
    (summary, ledger), seconds = _timed(run_crash_trials, index_dir, TOKEN, kills=kills,
                                        compaction_kills=compaction_kills, seed=seed)
    with ServerProcess(index_dir, token=TOKEN) as server:
        after = verify_items(server.url, {i: (label, None) for i, label in ledger.live.items()}, ledger.deleted)
    return {**summary, "seconds": seconds, "problems_via_restarted_server": after[:10]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=os.path.join(REPO, "runs", "fmnist-index"),
                        help="index directory with its model.pt (copied, never written)")
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs during writes")
    parser.add_argument("--compaction-kills", type=int, default=10,
                        help="SIGKILLs during writes while another process compacts in a loop")
    parser.add_argument("--schema-examples", type=int, default=200)
    parser.add_argument("--fuzz-inputs", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="bad_input,schema,decode,soak,crash",
                        help="comma-separated subset of the suites")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "reliability.json"))
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.index, DB_FILE)):
        parser.error(f"{args.index} is not an index directory; build one first (bash scripts/demo.sh)")
    only = set(args.only.split(","))
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as workdir:
        def fresh_copy(name: str) -> str:
            return copy_index(args.index, os.path.join(workdir, name))

        if "bad_input" in only:
            results["bad_input"] = bad_input(fresh_copy("bad_input"), workdir)
        if "schema" in only:
            results["schemathesis"] = schema_fuzz(fresh_copy("schema"), workdir, args.schema_examples, args.seed)
        if "decode" in only:
            results["decode_fuzz"] = decode_fuzz(args.fuzz_inputs, args.seed)
        if "soak" in only:
            results["soak"] = soak(fresh_copy("soak"), workdir, args.soak_seconds, args.clients, args.seed)
        if "crash" in only:
            results["crash"] = crash(fresh_copy("crash"), args.kills, args.compaction_kills, args.seed)
    emit({"benchmark": "reliability", "index": os.path.abspath(args.index),
          "server": {"workers": 2, "threads": 4, "mode": "gunicorn (simsearch serve)"}, **results}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

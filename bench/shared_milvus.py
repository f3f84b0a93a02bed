"""Several API servers on one Milvus collection: read-your-writes across servers (0 lost, 0 inconsistent).

Copies an index (default: the 60k demo index) into a collection on a ``milvus-lite server`` (or, with
``--standalone``, the real Milvus 2.3.5 server), starts ``--servers`` separate ``simsearch serve`` processes
on it (each gunicorn with 2 workers), and runs :func:`bench.reliability.shared.run_shared_trial`: every add
through one server is read back at once through every other (its info, and a search filtered to its label),
every third add is deleted through the next server and must be gone everywhere, and at the end the
collection itself must hold exactly the acknowledged state.

    .venv/bin/python -m bench.shared_milvus --rounds 60       # ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile

from bench import DEMO_INDEX
from bench.machine import emit
from bench.reliability.server import ServerProcess
from bench.reliability.shared import run_shared_trial
from engine.build import copy_index

TOKEN = "bench-shared-" + os.urandom(6).hex()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=DEMO_INDEX)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--standalone", action="store_true", help="the real Milvus 2.3.5 server")
    parser.add_argument("--out", default="bench/results/shared_milvus.json")
    args = parser.parse_args()
    from bench.milvus_servers import MilvusLiteServer, MilvusStandaloneServer

    with tempfile.TemporaryDirectory(prefix="bench-shared-") as workdir:
        milvus = (MilvusStandaloneServer(os.path.join(workdir, "standalone")) if args.standalone else
                  MilvusLiteServer(os.path.join(workdir, "data"), log_path=os.path.join(workdir, "milvus.log")))
        with milvus:
            location = f"milvus://127.0.0.1:{milvus.port}/shared"
            copied = copy_index(args.index, location, home=os.path.join(workdir, "home"), progress=False)
            servers = [ServerProcess(location, token=TOKEN, workers=2, threads=4,
                                     log_path=os.path.join(workdir, f"api-{i}.log")) for i in range(args.servers)]
            try:
                urls = [server.start().url for server in servers]
                summary = run_shared_trial(urls, TOKEN, location, rounds=args.rounds, seed=1)
            finally:
                for server in servers:
                    server.stop()
    emit({"benchmark": "shared_milvus", "milvus": "2.3.5 standalone" if args.standalone else "milvus-lite server",
          "index": os.path.relpath(args.index), "items": copied["copied"], "api_servers": args.servers,
          "workers_per_server": 2, **summary}, args.out)


if __name__ == "__main__":
    main()

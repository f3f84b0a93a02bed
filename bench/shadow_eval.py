"""Figure: shadow evaluation of two models of the same index (issue 25, figure 3).  The demo index (60k
Fashion-MNIST training images, the demo model) is re-embedded with the full-recipe model; ``simsearch evaluate``
then compares the two on the 10k test images (labelled) and on a sample of logged traffic: a server started with
``--log-queries`` receives ``--traffic`` searches with test images, and the log is replayed on both indexes.

    .venv/bin/python -m bench.shadow_eval --index runs/demo/index \
        --checkpoint runs/matrix/fashion-mnist-native/model.pt --out bench/results/shadow_eval

Writes ``OUT/labelled/evaluation.{json,html}``, ``OUT/traffic/evaluation.{json,html}`` and
``bench/results/shadow_eval.json`` (the numbers of both, and the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import requests

from bench import REPO
from bench.lifecycle import query_images, simsearch
from bench.machine import emit
from bench.reliability.server import ServerProcess


def log_traffic(index: str, folder: Path, n: int) -> int:
    """Serve ``index`` with every query logged into ``folder``; send ``n`` searches with test images."""
    server = ServerProcess(index, workers=2, threads=2, extra_args=("--log-queries", str(folder),
                                                                     "--log-queries-rate", "1.0"))
    sent = 0
    with server:
        with requests.Session() as http:
            for path in query_images(n):
                r = http.post(f"{server.url}/api/search?k=10", data=path.read_bytes(),
                              headers={"Content-Type": "image/png"}, timeout=60)
                r.raise_for_status()
                sent += 1
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default="runs/demo/index")
    parser.add_argument("--checkpoint", default="runs/matrix/fashion-mnist-native/model.pt")
    parser.add_argument("--new", default="runs/demo-full-index", help="the re-embedded index (made if missing)")
    parser.add_argument("--queries", default="fashion-mnist-test", help="labelled queries (simsearch evaluate's DATA)")
    parser.add_argument("--traffic", type=int, default=500, help="searches sent to the logging server")
    parser.add_argument("--out", default="bench/results/shadow_eval")
    args = parser.parse_args(argv)
    index, new = os.path.abspath(args.index), os.path.abspath(args.new)
    started = time.perf_counter()
    reembed = simsearch("index", "reembed", index, "--checkpoint", os.path.abspath(args.checkpoint), "--out", new,
                        "--quiet")
    reembed_s = time.perf_counter() - started
    out = Path(args.out).absolute()
    labelled_dir, traffic_dir = out / "labelled", out / "traffic"
    for folder in (labelled_dir, traffic_dir):
        shutil.rmtree(folder, ignore_errors=True)
    queries = args.queries if args.queries.startswith("fashion-mnist") else os.path.abspath(args.queries)
    simsearch("evaluate", "--old", index, "--new", new, "--queries", queries,
              "--out", str(labelled_dir), "--quiet")
    log = Path(tempfile.mkdtemp(prefix="simsearch-query-log-"))
    try:
        sent = log_traffic(index, log, args.traffic)
        simsearch("evaluate", "--old", index, "--new", new, "--from-log", str(log), "--out", str(traffic_dir),
                  "--quiet")
    finally:
        shutil.rmtree(log, ignore_errors=True)
    results = {name: json.loads((folder / "evaluation.json").read_text())
               for name, folder in (("labelled", labelled_dir), ("traffic", traffic_dir))}
    emit({"figure": "simsearch evaluate: the demo model against the full-recipe model, same 60k items",
          "command": "python -m bench.shadow_eval", "old": index, "new": new,
          "reembed": {**reembed, "wall_s": round(reembed_s, 1)}, "traffic_sent": sent,
          "labelled": {k: results["labelled"][k] for k in ("queries", "labelled", "latency_ms", "verdict",
                                                           "verdict_reason")},
          "traffic": {k: results["traffic"][k] for k in ("queries", "latency_ms", "verdict")}
          | {"overlap": results["traffic"]["traffic"]["overlap"],
             "vote_agreement": results["traffic"]["traffic"]["vote_agreement"]},
          "html": [str(labelled_dir / "evaluation.html"), str(traffic_dir / "evaluation.html")]},
         os.path.join(REPO, "bench", "results", "shadow_eval.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

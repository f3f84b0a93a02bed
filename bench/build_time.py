"""Figure: ``simsearch index build`` end to end (the CLI process's wall time: start-up, reading the data, decoding,
embedding, the duplicate check, writing the store) per runtime, in the same run (issue 13, figure 3).

The ONNX model is exported first (``simsearch export``, timed apart), so the onnx build finds it beside the
checkpoint as a second build would.  Each build writes a new index in a temporary folder.

    .venv/bin/python -m bench.build_time --checkpoint runs/fmnist-full/model.pt --data fashion-mnist
    .venv/bin/python -m bench.build_time --checkpoint runs/trashnet/model.pt --data ../shared/datasets/trashnet-150
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench import REPO
from bench.machine import emit


def simsearch(*args: str) -> tuple[dict, float]:
    """Run ``python -m simsearch.cli ARGS``; its last JSON document on stdout and the wall seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "simsearch.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"simsearch {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    text = done.stdout
    return json.loads(text[text.rfind("\n{") + 1 if "\n{" in text else text.find("{"):]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx"])
    parser.add_argument("--type", default="auto", help="index type (as index build --type)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    checkpoint = os.path.abspath(args.checkpoint)
    export, export_s = simsearch("export", "--checkpoint", checkpoint, "--format", "onnx")
    rows = []
    with tempfile.TemporaryDirectory(prefix="build-time-") as work:
        for runtime in args.runtimes:
            out = os.path.join(work, runtime)
            summary, seconds = simsearch("index", "build", "--checkpoint", checkpoint, "--data", args.data,
                                         "--out", out, "--type", args.type, "--runtime", runtime, "--quiet")
            rows.append({"runtime": runtime, "wall_seconds": round(seconds, 1), **{
                k: summary[k] for k in ("added", "type", "embed_seconds", "images_per_second", "duplicates")}})
            print(rows[-1], file=sys.stderr, flush=True)
    by = {row["runtime"]: row for row in rows}
    ratios = {}
    if "torch" in by and "onnx" in by:
        ratios = {"wall": round(by["torch"]["wall_seconds"] / by["onnx"]["wall_seconds"], 2),
                  "embedding_throughput": round(by["onnx"]["images_per_second"] / by["torch"]["images_per_second"],
                                                2)}
    name = args.name or ("fashion_mnist" if args.data == "fashion-mnist" else os.path.basename(args.data.rstrip("/")))
    emit({"figure": "simsearch index build end to end, per runtime, one run",
          "command": f"python -m bench.build_time --checkpoint {args.checkpoint} --data {args.data}",
          "export": {"seconds": round(export_s, 1), "file_bytes": export.get("bytes", export.get("size_bytes"))},
          "rows": rows, "onnx_speedup": ratios},
         os.path.join(REPO, "bench", "results", f"build_time_{name}.json"))


if __name__ == "__main__":
    main()

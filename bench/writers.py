"""Every kind of writer at once, repeated: on one running server (gunicorn, 2 workers x 4 threads) over a copy
of an index, each trial has API clients add and delete while ``simsearch index add`` (``--images`` new
images), ``simsearch index remove`` (5 original items) and ``simsearch index compact --force`` run in other
processes.  After each trial every acknowledged write is checked on both workers and on disk; after the
last, again through a restarted server.

    .venv/bin/python -m bench.writers --index runs/demo/index --trials 20     # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from bench import DEMO_INDEX, REPO, copy_index
from bench.machine import emit
from bench.reliability.server import ServerProcess
from bench.reliability.writers import WriterLedger, run_writers_trial, verify_on_disk, verify_on_workers
from similarity.data import load_labelled_images
from similarity.data import fashion_mnist_folder

TOKEN = "bench-writers-" + os.urandom(6).hex()


def image_folder(root: str, n: int, offset: int) -> str:
    """``n`` Fashion-MNIST test images (not in the train-set index) as class folders under ``root``."""
    test = fashion_mnist_folder("test")
    for i in range(offset, offset + n):
        label = test.class_names[test.labels[i]]
        os.makedirs(os.path.join(root, label), exist_ok=True)
        shutil.copyfile(test.paths[i], os.path.join(root, label, f"t{i}.png"))
    load_labelled_images(root, min_per_class=1)  # fails loudly here, not in a trial
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=DEMO_INDEX)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--images", type=int, default=40, help="images per `simsearch index add`")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "writers.json"))
    args = parser.parse_args(argv)
    trials = []
    total = WriterLedger()
    with tempfile.TemporaryDirectory(prefix="bench-writers-") as work:
        index = copy_index(args.index, os.path.join(work, "index"))
        with ServerProcess(index, token=TOKEN, workers=2, threads=4, log_path=os.path.join(work, "server.log")) as server:
            for trial in range(args.trials):
                folder = image_folder(os.path.join(work, f"images-{trial}"), args.images, trial * args.images)
                summary, ledger = run_writers_trial(index, TOKEN, folder, server=server, seed=trial,
                                                    remove_ids=[trial * 5 + j for j in range(5)])
                total.live.update(ledger.live)
                total.images.update(ledger.images)
                total.deleted |= ledger.deleted
                for item_id in ledger.deleted:
                    total.live.pop(item_id, None)
                trials.append(summary)
                print(summary, flush=True)
        with ServerProcess(index, token=TOKEN, workers=2, threads=4, log_path=os.path.join(work, "restart.log")) as server:
            after_restart = verify_on_workers(server.url, total, rounds=1)
        after_restart += verify_on_disk(index, total)
    emit({"benchmark": "writers", "index": os.path.abspath(args.index), "trials": args.trials,
          "summary": {"trials_clean": sum(not t["problems"] for t in trials),
                      "writers_failed": sum(t["writers_failed"] for t in trials),
                      "api_adds": sum(t["api_adds"] for t in trials), "api_deletes": sum(t["api_deletes"] for t in trials),
                      "cli_added": sum(t["cli_added"] for t in trials), "cli_removed": sum(t["cli_removed"] for t in trials),
                      "problems_after_restart": after_restart[:20],
                      "acknowledged_checked_after_restart": len(total.live) + len(total.deleted),
                      "mean_trial_s": round(sum(t["seconds"] for t in trials) / max(1, len(trials)), 1)},
          "per_trial": trials}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Figure: ``simsearch tune`` within a total time budget, the trials and the best score against the default recipe
(issue 14, figure 3).

The data's 20% test split (stratified, seed 0: the split the auto-recipe figure scores on) is held out; the
search runs on the other 80%, written as a CSV of path,label, as a subprocess exactly as a user types it. Trial 0
of every study is the recipe chosen from the data, so the study itself compares the best trial with the default
at the same per-trial budget (validation kNN accuracy). The best trial's checkpoint is then scored on the held-out
test split (queries) against the 80% (gallery), as the auto-recipe figure does.

    .venv/bin/python -m bench.tune_study --data ../shared/datasets/trashnet-150 --name trashnet \
        --budget-minutes 30 --trials 6
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from bench import REPO
from bench.auto_recipe import score_checkpoint
from bench.machine import emit
from similarity.checkpoint import load_checkpoint
from similarity.data import load_labelled_images, stratified_split


def write_csv(data, indices: np.ndarray, path: str) -> str:
    """The images ``indices`` of ``data`` as a CSV of absolute path,label rows."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for i in indices:
            writer.writerow([os.path.abspath(data.paths[i]), data.class_names[data.labels[i]]])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--out", default=None, help="working folder (default runs/tune-NAME)")
    args = parser.parse_args()
    out = args.out or os.path.join(REPO, "runs", f"tune-{args.name}")
    shutil.rmtree(out, ignore_errors=True)
    data = load_labelled_images(args.data)
    split = stratified_split(data.labels, val_fraction=0.0, test_fraction=0.2, seed=0)
    train_csv = write_csv(data, split["train"], os.path.join(out, "train.csv"))
    study_dir = os.path.join(out, "study")
    command = [sys.executable, "-m", "simsearch.cli", "tune", "--data", train_csv, "--out", study_dir,
               "--budget-minutes", f"{args.budget_minutes:g}", "--trials", str(args.trials), "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tune failed ({done.returncode}): {done.stderr[-3000:]}")
    summary = json.load(open(os.path.join(study_dir, "summary.json")))
    with open(os.path.join(study_dir, "study.csv"), newline="") as handle:
        trials = list(csv.DictReader(handle))
    recipe = next((line[len("recipe: "):] for line in done.stdout.splitlines() if line.startswith("recipe: ")), None)

    ckpt = load_checkpoint(os.path.join(summary["files"]["best_trial"], "model.pt"))
    gallery, queries = data.subset(split["train"]), data.subset(split["test"])
    test = score_checkpoint(ckpt, gallery, queries)
    history_png = os.path.join(study_dir, "optimization_history.png")
    picture = os.path.join(REPO, "bench", "results", f"tune_{args.name}_history.png")
    if os.path.exists(history_png):
        shutil.copyfile(history_png, picture)
    emit({"figure": f"simsearch tune with a {args.budget_minutes:g}-minute budget: the trials, and the best "
                    "against the default recipe (trial 0)",
          "command": " ".join(["simsearch", *command[3:]]),
          "wall_seconds": round(wall, 1),
          "recipe_line": recipe,
          "trials": trials,
          "metric": summary["metric"],
          "default_recipe_val": summary["default_value"],
          "best_val": summary["best_value"],
          "gain_over_default_val": summary["gain_over_default"],
          "best_trial": summary["best_trial"], "best_params": summary["best_params"],
          "completed": summary["completed"], "pruned": summary["pruned"],
          "minutes_per_trial": summary["minutes_per_trial"],
          "best_trial_on_test": {"evaluation": f"the 20% test split ({len(queries)}) against the rest "
                                               f"({len(gallery)})", "metrics": test},
          "picture": os.path.relpath(picture, REPO) if os.path.exists(picture) else None},
         os.path.join(REPO, "bench", "results", f"tune_{args.name}.json"))


if __name__ == "__main__":
    main()

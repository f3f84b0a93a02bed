"""``simsearch tune``: hyper-parameter search (Optuna) around the recipe, inside a total time budget.

Writes OUT/study.csv, OUT/best.json, OUT/summary.json and the plots; then train the winner with
``simsearch train --data DIR --config OUT/best.json``. Needs the optuna extra (requirements-tune.txt).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from similarity.config import with_overrides
from similarity.data import check_labelled
from similarity.recipe import DEFAULT_BUDGET_MINUTES
from similarity.tune import TuneConfig, TuneError, tune
from simsearch.cli import UserError
from simsearch.cmd_train import add_base_arguments, base_recipe, load_training_data, print_recipe


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "tune", help="hyper-parameter search (Optuna) within a time budget",
        description="Search learning rate, temperature or margin, embedding size, trainable blocks and "
                    "augmentation strength around the recipe chosen from the data (or --preset/--config). Each "
                    "trial trains with an equal share of --budget-minutes; trials trailing the median validation "
                    "kNN accuracy are pruned.",
        epilog="Then: simsearch train --data DIR --config OUT/best.json. Needs optuna: "
               "pip install -r requirements-tune.txt (plotly adds OUT/study.html).")
    p.add_argument("--data", required=True, help="image folder, CSV of path,label, or 'fashion-mnist'")
    p.add_argument("--out", default="runs/tune", help="output folder (study.csv, best.json, plots, trials/)")
    add_base_arguments(p)
    p.add_argument("--budget-minutes", type=float, default=60.0, help="wall time of the whole search (default 60)")
    p.add_argument("--trials", type=int, default=20,
                   help="each trial gets budget/trials minutes (default 20); pruned trials leave time for more")
    p.add_argument("--max-trials", type=int, default=None, help="the most trials (default 3 x --trials)")
    p.add_argument("--train-budget-minutes", type=float, default=None,
                   help=f"the training budget best.json is written with, and the recipe is chosen for (default: "
                        f"the config's, else {DEFAULT_BUDGET_MINUTES:g})")
    p.add_argument("--epochs", type=int, help="the most epochs per trial")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (TPE)")
    p.add_argument("--fashion-mnist-dir", default=None, help="folder with the four Fashion-MNIST .gz files")
    p.add_argument("--download", action="store_true", help="download Fashion-MNIST if not found (needs internet)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        settings = TuneConfig(n_trials=args.trials, budget_minutes=args.budget_minutes, max_trials=args.max_trials,
                              seed=args.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    data, _ = load_training_data(args)  # the official test set stays out of the search
    print(data.summary())
    check_labelled(data)  # the search scores class retrieval
    recipe = base_recipe(args, data, args.train_budget_minutes)
    base = with_overrides(recipe.config, epochs=args.epochs, device=args.device, threads=args.threads)
    recipe = replace(recipe, config=base)
    print_recipe(recipe, base)
    print(f"trials of up to {settings.minutes_per_trial:.2g} minutes each, while one fits the "
          f"{settings.budget_minutes:g}-minute budget (at most {settings.trial_cap})")
    try:
        result = tune(data, base, args.out, settings, progress=not args.quiet)
    except TuneError as exc:
        raise UserError(str(exc)) from exc
    print(json.dumps({"best_value": result.best_value, "best_params": result.best_params,
                      "completed": result.completed, "pruned": result.pruned, "files": result.files}, indent=2))
    print(f"train it: simsearch train --data {args.data} --config {result.files['best']}")
    return 0

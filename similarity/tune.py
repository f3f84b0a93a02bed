"""Hyper-parameter search with Optuna, inside a total time budget.

:func:`tune` trains one model per trial from a base config (usually the recipe chosen from the data), each
with the same share of the budget (``budget / n_trials``; pruned trials leave time for more), reports the validation kNN accuracy after every epoch and lets a
``MedianPruner`` stop trials that trail the others. Trial 0 is the base config itself (:func:`base_params`),
so ``summary.json`` gives the search's gain over the recipe at the same per-trial budget. The search space follows the base config
(:func:`suggest_config`): learning rate (log scale around the base's), the loss's temperature or margin,
embedding size, trainable blocks of a pretrained backbone, and augmentation strength.

It writes, into ``out_dir``: ``study.csv`` (one row per trial), ``best.json`` (the best trial's full
:class:`TrainConfig`, with the base's time budget, for ``simsearch train --config best.json``),
``summary.json``, Optuna's plots as PNG (optimisation history; parameter importances once two trials
completed) and, when plotly is installed, ``study.html``. Each trial's history and curves stay in
``trials/NNN/``; only the best trial keeps its checkpoint.

Optuna is an extra (``requirements-tune.txt``): it is imported when :func:`tune` runs, with a clear error
when it is missing.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from similarity.checkpoint import CHECKPOINT_FILE
from similarity.config import TrainConfig, write_config
from similarity.data import LabelledImages

log = logging.getLogger(__name__)

EMBEDDING_DIMS = (64, 128, 256)
TRAINABLE_BLOCKS = (-1, 3, 6, 9)  # all, or the last N blocks of the pretrained backbone
METRIC = "val_knn_accuracy"  # the history column trials are judged on (higher is better)


class TuneError(RuntimeError):
    """The search cannot run or gave nothing (optuna missing, no trial completed)."""


class OptunaMissingError(TuneError):
    """``simsearch tune`` needs the optuna extra."""


@dataclass(frozen=True)
class TuneConfig:
    """How the search runs: ``budget_minutes`` of wall time in trials of ``budget_minutes / n_trials`` each.

    A trial starts only while its whole share still fits the budget; trials that are pruned (or end early)
    leave their time to further trials, up to ``max_trials`` (default ``3 * n_trials``)."""

    n_trials: int = 20
    budget_minutes: float = 60.0
    max_trials: int | None = None
    seed: int = 0
    startup_trials: int = 3  # trials that run to the end before the pruner judges others
    warmup_epochs: int = 1  # epochs a trial always gets before it can be pruned

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {self.n_trials}")
        if self.budget_minutes <= 0:
            raise ValueError(f"budget_minutes must be > 0, got {self.budget_minutes}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"max_trials must be >= 1, got {self.max_trials}")

    @property
    def minutes_per_trial(self) -> float:
        return self.budget_minutes / self.n_trials

    @property
    def trial_cap(self) -> int:
        return self.max_trials or 3 * self.n_trials


@dataclass(frozen=True)
class TuneResult:
    best_config: TrainConfig
    best_value: float
    best_params: dict[str, Any]
    completed: int
    pruned: int
    files: dict[str, str]  # what was written: "csv", "best", "summary", "plots"...


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        raise OptunaMissingError("hyper-parameter search needs optuna: pip install -r requirements-tune.txt") from exc
    return optuna


def suggest_config(trial: Any, base: TrainConfig) -> TrainConfig:
    """``base`` with the hyper-parameters ``trial`` (an ``optuna.Trial``) suggests."""
    lr = trial.suggest_float("lr", base.lr / 5, base.lr * 5, log=True)
    loss = base.loss
    if loss.name == "normsoftmax":
        loss = replace(loss, temperature=trial.suggest_float("temperature", 0.02, 0.2, log=True))
    elif loss.name == "triplet":
        loss = replace(loss, triplet_margin=trial.suggest_float("triplet_margin", 0.02, 0.5, log=True))
    elif loss.name == "contrastive":
        loss = replace(loss, neg_margin=trial.suggest_float("neg_margin", 0.0, 0.7))
    model = replace(base.model, embedding_dim=trial.suggest_categorical("embedding_dim", EMBEDDING_DIMS))
    if model.backbone != "smallcnn" and model.pretrained:
        model = replace(model, trainable_blocks=trial.suggest_categorical("trainable_blocks", TRAINABLE_BLOCKS))
    strength = trial.suggest_float("augment_strength", 0.25, 1.5) if base.augment else base.augment_strength
    return replace(base, lr=lr, loss=loss, model=model, augment_strength=strength)


def base_params(base: TrainConfig) -> dict[str, Any]:
    """``base``'s own values of the parameters :func:`suggest_config` searches (clipped into their ranges), so
    that the first trial trains the recipe itself: the study then says what the search gained over it, at the
    same per-trial budget."""
    params: dict[str, Any] = {"lr": base.lr}
    if base.loss.name == "normsoftmax":
        params["temperature"] = min(0.2, max(0.02, base.loss.temperature))
    elif base.loss.name == "triplet":
        params["triplet_margin"] = min(0.5, max(0.02, base.loss.triplet_margin))
    elif base.loss.name == "contrastive":
        params["neg_margin"] = min(0.7, max(0.0, base.loss.neg_margin))
    if base.model.embedding_dim in EMBEDDING_DIMS:
        params["embedding_dim"] = base.model.embedding_dim
    if base.model.backbone != "smallcnn" and base.model.pretrained and base.model.trainable_blocks in TRAINABLE_BLOCKS:
        params["trainable_blocks"] = base.model.trainable_blocks
    if base.augment:
        params["augment_strength"] = min(1.5, max(0.25, base.augment_strength))
    return params


def tune(data: LabelledImages, base: TrainConfig, out_dir: str | os.PathLike, settings: TuneConfig = TuneConfig(), *,
         val_data: LabelledImages | None = None, progress: bool = False) -> TuneResult:
    """Search hyper-parameters around ``base`` on ``data``; see the module docstring for what is written.

    ``base.val_fraction`` (or ``val_data``) must give a validation set: trials are judged on it.
    """
    if val_data is None and base.val_fraction <= 0:
        raise ValueError("tuning needs a validation split: set val_fraction > 0 (or give val_data)")
    optuna = import_optuna()
    from similarity.train import train

    out = Path(out_dir)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials,
                                           n_warmup_steps=settings.warmup_epochs))
    study.enqueue_trial(base_params(base), user_attrs={"base": True})  # trial 0: the recipe as it is

    started = time.monotonic()

    def minutes_left() -> float:
        return settings.budget_minutes - (time.monotonic() - started) / 60

    def objective(trial: Any) -> float:
        config = replace(suggest_config(trial, base), budget_minutes=settings.minutes_per_trial, max_minutes=0.0)
        trial.set_user_attr("config", config.to_dict())

        def report(row: dict) -> None:
            if METRIC in row:
                trial.report(row[METRIC], row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {row['epoch']}: {METRIC} {row[METRIC]:.4f} below the median")

        result = train(data, config, out / "trials" / f"{trial.number:03d}", val_data=val_data, progress=progress,
                       on_epoch=report)
        trial.set_user_attr("epochs", len(result.history))
        return max(row[METRIC] for row in result.history)

    def stop_when_no_trial_fits(study: Any, trial: Any) -> None:
        if minutes_left() < settings.minutes_per_trial:
            study.stop()

    study.optimize(objective, n_trials=settings.trial_cap, callbacks=[stop_when_no_trial_fits], gc_after_trial=True)
    states = optuna.trial.TrialState
    completed = [t for t in study.trials if t.state == states.COMPLETE]
    if not completed:
        raise TuneError(f"no trial completed within {settings.budget_minutes:g} minutes; give more time per trial")
    best = study.best_trial
    best_config = replace(TrainConfig.from_dict(best.user_attrs["config"]), budget_minutes=base.time_budget_minutes,
                          max_minutes=0.0)
    files = {"csv": str(write_trials_csv(study, out / "study.csv")),
             "best": str(write_config(best_config, out / "best.json")),
             "best_trial": str(out / "trials" / f"{best.number:03d}")}
    _keep_only_best_checkpoint(out / "trials", best.number)
    files.update(write_plots(study, out))
    first = study.trials[0]
    default_value = first.value if first.state == states.COMPLETE else None
    summary = {"best_value": best.value, "metric": METRIC, "best_trial": best.number, "best_params": best.params,
               "default_value": default_value, "default_params": first.params,
               "gain_over_default": None if default_value is None else best.value - default_value,
               "completed": len(completed), "pruned": sum(t.state == states.PRUNED for t in study.trials),
               "trials": len(study.trials), "minutes_per_trial": settings.minutes_per_trial,
               "budget_minutes": settings.budget_minutes,
               "minutes_used": round(settings.budget_minutes - minutes_left(), 2), "files": files}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    files["summary"] = str(out / "summary.json")
    return TuneResult(best_config, float(best.value), dict(best.params), summary["completed"], summary["pruned"],
                      files)


def write_trials_csv(study: Any, path: Path) -> Path:
    """One row per trial: number, state, value, seconds, epochs, then each parameter."""
    params = sorted({name for trial in study.trials for name in trial.params})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", METRIC, "seconds", "epochs", *params])
        for t in study.trials:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
            epochs = t.user_attrs.get("epochs", len(t.intermediate_values))
            writer.writerow([t.number, t.state.name, "" if t.value is None else round(t.value, 6),
                             seconds if seconds == "" else round(seconds, 1), epochs,
                             *[t.params.get(name, "") for name in params]])
    return path


def write_plots(study: Any, out: Path) -> dict[str, str]:
    """Optuna's matplotlib plots as PNG (optimisation history; parameter importances once two trials completed)
    and, when plotly is installed, the same in one ``study.html``.

    Warnings from the plotting (optuna marks these functions experimental; importances of two trials are
    uninformative) are logged, not raised: the figures are a by-product of a finished study."""
    from optuna.exceptions import ExperimentalWarning

    files: dict[str, str] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import matplotlib.pyplot as plt
        import optuna.visualization.matplotlib as mpl_plots

        completed = sum(t.state.name == "COMPLETE" for t in study.trials)
        plots = {"optimization_history": mpl_plots.plot_optimization_history}
        if completed >= 2:
            plots["param_importances"] = mpl_plots.plot_param_importances
        for name, plot in plots.items():
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances of a single-valued parameter
                log.warning("no %s plot: %s", name, exc)
                continue
            path = out / f"{name}.png"
            axes.figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(axes.figure)
            files[name] = str(path)
        html = _write_html(study, list(plots), out / "study.html")
    for warning in caught:
        if not issubclass(warning.category, ExperimentalWarning):
            log.warning("plotting the study: %s", warning.message)
    if html:
        files["html"] = html
    return files


def _write_html(study: Any, names: list[str], path: Path) -> str | None:
    """The plots ``names`` (keys of :func:`write_plots`) as plotly figures in one page, plotly.js inlined once
    so that it opens offline."""
    if importlib.util.find_spec("plotly") is None:
        log.info("plotly is not installed: no study.html")
        return None
    import optuna.visualization as plotly_plots

    available = {"optimization_history": plotly_plots.plot_optimization_history,
                 "param_importances": plotly_plots.plot_param_importances}
    parts = []
    for name in names:
        try:
            figure = available[name](study)
        except (ValueError, RuntimeError) as exc:
            log.warning("no %s in study.html: %s", name, exc)
            continue
        parts.append(figure.to_html(full_html=False, include_plotlyjs=not parts))
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>simsearch tune</title></head><body>"
                    + "".join(parts) + "</body></html>", encoding="utf-8")
    return str(path)


def _keep_only_best_checkpoint(trials_dir: Path, best: int) -> None:
    for checkpoint in trials_dir.glob(f"*/{CHECKPOINT_FILE}"):
        if checkpoint.parent.name != f"{best:03d}":
            checkpoint.unlink()

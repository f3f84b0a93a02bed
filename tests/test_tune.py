"""``simsearch tune``: two tiny trials write the study, and its best.json trains with ``simsearch train --config``."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
from dataclasses import replace

import pytest

from similarity.checkpoint import load_checkpoint
from similarity.config import LossConfig, ModelConfig, TrainConfig, read_config
from simsearch.cli import main


@pytest.fixture(scope="module")
def small_folder(fmnist_folder, tmp_path_factory):
    """200 of the PNGs, 20 per class."""
    root = tmp_path_factory.mktemp("tune_data")
    for i in range(0, 600, 3):
        target = root / fmnist_folder.class_names[fmnist_folder.labels[i]].replace("/", "-")
        target.mkdir(exist_ok=True)
        shutil.copy(fmnist_folder.paths[i], target / f"{i}.png")
    return root


def test_two_trials_write_the_study_and_best_json_trains(small_folder, tmp_path, capsys):
    pytest.importorskip("optuna")
    out = tmp_path / "tune"
    assert main(["tune", "--data", str(small_folder), "--out", str(out), "--trials", "2", "--max-trials", "2",
                 "--epochs", "1", "--budget-minutes", "4", "--threads", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"--config {out / 'best.json'}" in printed
    with open(out / "study.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    assert {"lr", "temperature", "embedding_dim", "augment_strength"} <= set(rows[0])
    assert (out / "optimization_history.png").stat().st_size > 1000
    assert (out / "param_importances.png").stat().st_size > 1000
    if importlib.util.find_spec("plotly"):
        assert "plotly" in (out / "study.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 2 and 0.0 <= summary["best_value"] <= 1.0
    # trial 0 trains the recipe as chosen from the data; the summary compares the best against it
    recipe = json.loads(next(line for line in printed.splitlines() if line.startswith("recipe: "))[8:])
    assert float(rows[0]["lr"]) == pytest.approx(recipe["lr"])
    assert int(rows[0]["embedding_dim"]) == recipe["embedding_dim"]
    assert summary["gain_over_default"] == pytest.approx(summary["best_value"] - summary["default_value"])
    assert summary["gain_over_default"] >= 0
    best = read_config(out / "best.json")
    assert best.lr == pytest.approx(summary["best_params"]["lr"])
    assert best.budget_minutes == 15.0  # trained later with the full training budget, not a trial's share
    assert len(list(out.glob("trials/*/model.pt"))) == 1  # only the best trial keeps its checkpoint

    run = tmp_path / "run"
    assert main(["train", "--data", str(small_folder), "--config", str(out / "best.json"), "--out", str(run),
                 "--epochs", "1", "--workers", "0", "--quiet"]) == 0
    trained = load_checkpoint(run / "model.pt")
    assert trained.config == replace(best, epochs=1, num_workers=0)  # best.json, with the flags applied
    assert trained.extra["recipe"]["source"] == f"config {out / 'best.json'}"


def test_the_search_space_follows_the_base_config():
    optuna = pytest.importorskip("optuna")
    from similarity.tune import suggest_config

    params = {"lr": 1e-3, "temperature": 0.1, "embedding_dim": 64, "augment_strength": 0.5}
    small = suggest_config(optuna.trial.FixedTrial(params), TrainConfig())
    assert (small.lr, small.loss.temperature, small.model.embedding_dim, small.augment_strength) == (
        1e-3, 0.1, 64, 0.5)
    photo = TrainConfig(model=ModelConfig(backbone="efficientnet_lite0"), loss=LossConfig(name="triplet"))
    tuned = suggest_config(optuna.trial.FixedTrial({**params, "triplet_margin": 0.2, "trainable_blocks": 3}), photo)
    assert (tuned.loss.triplet_margin, tuned.model.trainable_blocks) == (0.2, 3)


def test_trials_that_end_early_leave_their_time_to_more_trials(fmnist_small, tmp_path):
    """Each trial may take 0.5 of the 1-minute budget but one tiny epoch takes seconds: the study goes on past
    the 2 trials the budget is divided into, up to the cap, and stops starting trials once no share fits."""
    pytest.importorskip("optuna")
    from similarity.tune import TuneConfig, tune
    from tests.conftest import tiny_config

    base = replace(tiny_config(epochs=1, threads=1), model=replace(tiny_config().model, width=8))
    result = tune(fmnist_small, base, tmp_path / "t", TuneConfig(n_trials=2, budget_minutes=1.0, max_trials=4))
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["trials"] == 4 and result.completed + result.pruned == 4
    assert summary["minutes_used"] < 1.0
    # one trial's share is the whole budget: after the first trial none fits, whatever the cap
    tune(fmnist_small, base, tmp_path / "one", TuneConfig(n_trials=1, budget_minutes=1.0, max_trials=3))
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["trials"] == 1
    with pytest.raises(ValueError, match="max_trials"):
        TuneConfig(max_trials=0)


def test_without_optuna_tune_says_what_to_install(small_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["tune", "--data", str(small_folder), "--out", str(tmp_path / "t"), "--trials", "1",
                 "--quiet"]) == 2
    assert "requirements-tune.txt" in capsys.readouterr().err


def test_tune_needs_a_validation_split(fmnist_small, tmp_path):
    pytest.importorskip("optuna")
    from similarity.tune import tune

    with pytest.raises(ValueError, match="validation split"):
        tune(fmnist_small, TrainConfig(val_fraction=0.0), tmp_path)

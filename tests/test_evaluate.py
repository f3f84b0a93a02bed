"""``simsearch evaluate``: shadow evaluation of a re-embedded index against its source, on labelled queries and
on logged traffic, with real models and real indexes (``engine.evaluate``, ``report.evaluation``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from api.querylog import QueryLog
from durablefile import file_sha256
from engine.evaluate import (BETTER, NO_DIFFERENCE, UNKNOWN, VERDICTS_DIR, WORSE, EvaluationConfig, EvaluationError,
                             TrafficQuery, evaluate_indexes, paired_intervals, recorded_verdict, verdict)
from similarity.data import export_to_folder, load_fashion_mnist
from similarity.runtime import EmbedRuntime
from simsearch.cli import main
from tests.conftest import tiny_config

TORCH = EmbedRuntime("torch")
FAST = EvaluationConfig(resamples=200, latency_sample=20)


@pytest.fixture(scope="module")
def queries_folder(tmp_path_factory) -> str:
    """50 held-out Fashion-MNIST test images (5 per class) as PNG files in class folders."""
    test = load_fashion_mnist(None, "test")
    rng = np.random.default_rng(1)
    rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(test.labels == c), 5, replace=False) for c in range(10)]))
    return export_to_folder(test.subset(rows), tmp_path_factory.mktemp("queries")).source


@pytest.fixture(scope="module")
def second_index(fmnist_small, fmnist_folder, tmp_path_factory) -> str:
    """The same 600 images (same ids, labels and paths) embedded by a second tiny model trained with another seed."""
    from engine.build import build_index
    from similarity.train import train

    run = train(fmnist_small, tiny_config(seed=7), tmp_path_factory.mktemp("run2"), progress=False)
    out = tmp_path_factory.mktemp("idx2") / "index"
    build_index(run.checkpoint_path, fmnist_folder, out, progress=False)
    return str(out)


def _model_sha(index: str) -> str:
    return file_sha256(os.path.join(index, "model.pt"))


@pytest.mark.embedded_only  # paths of index directories throughout
def test_labelled_queries_give_intervals_for_both_sides_and_record_the_verdict(built_index, second_index,
                                                                                 queries_folder, tmp_path):
    result = evaluate_indexes(built_index, second_index, queries=queries_folder, out_dir=tmp_path / "out",
                              config=FAST, runtime=TORCH, progress=False)
    written = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert written == result.evaluation
    assert written["old"]["model_sha256"] == _model_sha(built_index) != written["new"]["model_sha256"]
    assert written["old"]["location"] == os.path.abspath(built_index) and written["new"]["items"] == 600
    # the index labels "T-shirt/top", the folder "T-shirt-top": those 5 queries are left out, the rest scored
    assert written["queries"] == {"kind": "labelled", "found": 50, "sampled": 50, "used": 45, "skipped": 0,
                                  "label_not_in_index": 5, "source": os.path.abspath(queries_folder)}
    labelled = written["labelled"]
    assert labelled["queries"] == 45 and set(labelled["metrics"]) == {"precision_at_1", "mean_average_precision_at_r",
                                                                      "knn_accuracy"}
    for metric in labelled["metrics"].values():
        assert metric["queries"] == 45
        for side in ("old", "new", "difference"):
            found = metric[side]
            assert found["ci_low"] <= found["value"] <= found["ci_high"], (metric["name"], side, found)
        assert metric["difference"]["value"] == pytest.approx(metric["new"]["value"] - metric["old"]["value"],
                                                              abs=2e-6)
    changes = labelled["knn_changes"]
    assert changes["gained"] + changes["lost"] <= 45 and 0.0 <= changes["mcnemar_p_value"] <= 1.0
    assert written["verdict"] in (BETTER, WORSE, NO_DIFFERENCE)
    assert written["verdict"] == verdict(labelled)[0]
    for side in ("old", "new"):
        assert written["latency_ms"][side]["searches"] == 20
        assert 0 < written["latency_ms"][side]["p50"] <= written["latency_ms"][side]["p95"]
    assert written["traffic"] is None

    record = os.path.join(second_index, VERDICTS_DIR, f"{_model_sha(built_index)}.json")
    assert result.verdict_path == record and json.loads(Path(record).read_text()) == written
    assert recorded_verdict(second_index, _model_sha(built_index)) == written
    assert recorded_verdict(second_index, "0" * 64) is None
    page = (tmp_path / "out" / "evaluation.html").read_text()
    assert written["verdict"] in page and "MAP@R" in page and "http://" not in page and "https://" not in page


@pytest.mark.embedded_only
def test_an_index_against_its_copy_changes_nothing(built_index, index_copy, queries_folder, tmp_path):
    bad = tmp_path / "queries"
    shutil.copytree(queries_folder, bad)
    (bad / "Bag" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # skipped and counted
    labelled = evaluate_indexes(built_index, index_copy, queries=bad, config=FAST, runtime=TORCH,
                                progress=False).evaluation
    assert labelled["queries"]["skipped"] == 1 and labelled["queries"]["used"] == 45
    for metric in labelled["labelled"]["metrics"].values():
        assert metric["old"] == metric["new"]
        assert metric["difference"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert labelled["labelled"]["knn_changes"]["gained"] == labelled["labelled"]["knn_changes"]["lost"] == 0
    assert labelled["verdict"] == NO_DIFFERENCE
    assert labelled["files"]["json"] == os.path.join(index_copy, "evaluation", "evaluation.json")  # the default out

    images = sorted(str(p) for p in bad.rglob("*.png"))[:12]
    traffic = [TrafficQuery(path, "Bag" if i == 0 else None) for i, path in enumerate(images)]
    replayed = evaluate_indexes(built_index, index_copy, traffic=traffic, traffic_source=str(bad), config=FAST,
                                runtime=TORCH, progress=False).evaluation
    section = replayed["traffic"]
    assert any(path.endswith("broken.png") for path in images)  # replayed too: skipped and counted
    assert replayed["queries"]["used"] == section["queries"] == 11 and replayed["queries"]["skipped"] == 1
    assert section["overlap"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "median": 1.0, "identical_share": 1.0}
    assert section["vote_agreement"]["value"] == 1.0
    assert len(section["changed"]) == 11 and len(section["changed"][0]["old"]["neighbors"]) == 5
    assert {n["label"] for n in section["changed"][0]["old"]["neighbors"]} == {"Bag"}  # the logged label filter
    assert replayed["verdict"] == UNKNOWN and replayed["labelled"] is None
    assert replayed["latency_ms"]["new"]["searches"] == 11
    page = Path(replayed["files"]["html"]).read_text()
    assert page.count("data:image/") >= 11 * 11  # each changed query and its 5 + 5 neighbours, inlined


@pytest.mark.embedded_only
def test_cli_evaluates_logged_queries(built_index, index_copy, fmnist_folder, tmp_path, capsys):
    log = QueryLog(tmp_path / "log", rate=1.0, max_bytes=10**7, seed=0)
    for path in fmnist_folder.paths[:6]:
        log.maybe_log(Path(path).read_bytes(), k=5, label=None, neighbor_ids=[1, 2], model_sha="ab" * 32)
    out = tmp_path / "out"
    assert main(["evaluate", "--old", built_index, "--new", index_copy, "--from-log", str(tmp_path / "log"),
                 "--k", "5", "--sample", "4", "--out", str(out), "--runtime", "torch", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "queries: 4 used (traffic), 0 skipped" in printed and "top-5 overlap: 1.0000" in printed
    assert "verdict: unknown" in printed and str(out / "evaluation.html") in printed
    assert json.loads((out / "evaluation.json").read_text())["settings"]["sample"] == 4


@pytest.mark.embedded_only
def test_cli_refuses_bad_input_with_exit_2(built_index, queries_folder, tmp_path, capsys):
    (tmp_path / "empty" / "Bag").mkdir(parents=True)
    (tmp_path / "nolog").mkdir()
    cases = [
        (["--old", str(tmp_path / "missing"), "--new", built_index, "--queries", queries_folder], "missing"),
        (["--old", built_index, "--new", built_index, "--queries", queries_folder], "same index"),
        (["--old", built_index, "--new", built_index + "/.", "--queries", queries_folder], "same index"),
        (["--old", built_index, "--new", str(tmp_path / "other"), "--queries", str(tmp_path / "empty")],
         "no image files"),
        (["--old", built_index, "--new", str(tmp_path / "other"), "--from-log", str(tmp_path / "nolog")],
         "no logged queries"),
        (["--old", built_index, "--new", str(tmp_path / "other"), "--from-log", str(tmp_path / "absent")],
         "not found"),
        (["--old", built_index, "--new", built_index, "--queries", queries_folder, "--onnx", "m.onnx"], "--onnx"),
        (["--old", built_index, "--new", built_index, "--queries", queries_folder, "--sample", "0"], "sample"),
    ]
    for argv, message in cases:
        assert main(["evaluate", *argv, "--runtime", "torch", "--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


@pytest.mark.embedded_only
def test_cli_refuses_queries_whose_labels_match_no_index_label(built_index, index_copy, tmp_path, capsys,
                                                               fmnist_folder):
    zebras = tmp_path / "zebras" / "Zebra"
    zebras.mkdir(parents=True)
    shutil.copy(fmnist_folder.paths[0], zebras / "z.png")
    assert main(["evaluate", "--old", built_index, "--new", index_copy, "--queries", str(tmp_path / "zebras"),
                 "--runtime", "torch", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "none of the query labels (Zebra) is a label of both indexes" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(index_copy, VERDICTS_DIR))  # nothing judged, nothing recorded


def test_paired_intervals_and_verdicts():
    rng = np.random.default_rng(0)
    old = (rng.random(400) < 0.6).astype(float)
    same = paired_intervals(old, old.copy(), resamples=300, confidence=0.95, rng=np.random.default_rng(1))
    assert same["difference"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0} and same["old"] == same["new"]
    assert same["old"]["ci_low"] < same["old"]["value"] < same["old"]["ci_high"]
    better = np.where(rng.random(400) < 0.5, 1.0, old)  # right wherever old was, and on about half of the rest
    found = paired_intervals(old, better, resamples=300, confidence=0.95, rng=np.random.default_rng(1))
    assert found == paired_intervals(old, better, resamples=300, confidence=0.95, rng=np.random.default_rng(1))
    assert found["difference"]["ci_low"] > 0
    with_nan = paired_intervals(np.array([1.0, np.nan, 0.0]), np.array([1.0, 1.0, np.nan]), resamples=50,
                                confidence=0.9, rng=rng)
    assert with_nan["queries"] == 1 and with_nan["old"]["value"] == 1.0

    def labelled(low: float, high: float) -> dict:
        difference = {"value": (low + high) / 2, "ci_low": low, "ci_high": high}
        return {"queries": 10, "confidence": 0.95, "metrics": {"knn_accuracy": {"difference": difference}}}

    assert verdict(labelled(0.01, 0.05))[0] == BETTER
    assert verdict(labelled(-0.05, -0.01))[0] == WORSE
    assert verdict(labelled(-0.01, 0.02))[0] == NO_DIFFERENCE
    assert verdict(None)[0] == UNKNOWN
    with pytest.raises(ValueError, match="confidence"):
        EvaluationConfig(confidence=1.0)
    with pytest.raises(EvaluationError, match="exactly one"):
        evaluate_indexes("a", "b")


def test_recorded_verdict_ignores_a_record_of_another_model(tmp_path):
    home = tmp_path / "home"
    (home / VERDICTS_DIR).mkdir(parents=True)
    (home / "model.pt").write_bytes(b"the new model")
    old_sha = "a" * 64
    record = {"verdict": WORSE, "new": {"model_sha256": file_sha256(home / "model.pt")},
              "old": {"model_sha256": old_sha}}
    (home / VERDICTS_DIR / f"{old_sha}.json").write_text(json.dumps(record))
    assert recorded_verdict(str(home), old_sha) == record
    (home / "model.pt").write_bytes(b"re-embedded since with another model")
    assert recorded_verdict(str(home), old_sha) is None
    assert recorded_verdict(str(home), "b" * 64) is None
    (home / VERDICTS_DIR / f"{'c' * 64}.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        recorded_verdict(str(home), "c" * 64)
    with pytest.raises(ValueError, match="sha256"):
        recorded_verdict(str(home), "../../etc/passwd")

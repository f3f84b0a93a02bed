"""A collection without labels, end to end: a copy descriptor trained on a flat folder of 40 TrashNet photos (one
epoch, 64 px), an index built from the folder, served (search without a vote, the page without its class bar),
queried on the command line and reported on (t-SNE and duplicate groups, no class metrics); and the duplicate rule
an index takes from its checkpoint (:func:`engine.duplicate_rule.rule_for`)."""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from api import ApiConfig, SearchService, create_app
from engine.duplicate_rule import CANDIDATE_COSINE, DEFAULT_DESCRIPTOR_COSINE, descriptor_cosine_for, rule_for
from engine.engine import Engine
from similarity.checkpoint import load_checkpoint
from similarity.hygiene import DuplicateRule
from simsearch.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent / "api"))
from apitest_helpers import TOKEN  # noqa: E402


def test_a_copy_checkpoint_gives_its_index_a_descriptor_rule(copies_model, unlabelled_index):
    checkpoint = load_checkpoint(copies_model)
    assert checkpoint.objective == "copies"
    measured = checkpoint.metrics["val"].get("threshold_at_p90")
    candidate = (min(CANDIDATE_COSINE, measured) if measured is not None and math.isfinite(measured)
                 else CANDIDATE_COSINE)
    engine = Engine.open(unlabelled_index)
    try:
        rule = engine.duplicate_rule
    finally:
        engine.close()
    assert rule.descriptor_cosine == pytest.approx(max(DEFAULT_DESCRIPTOR_COSINE, candidate))
    assert rule.descriptor_cosine == descriptor_cosine_for(checkpoint)
    assert rule.cosine == pytest.approx(min(DuplicateRule().cosine, candidate))


def test_rule_for_takes_the_measured_threshold_then_the_constant_and_lets_the_command_line_win(copies_model,
                                                                                               checkpoint_path):
    copies = load_checkpoint(copies_model)
    measured = replace(copies, metrics={"val": {"threshold_at_p90": 0.8}})  # candidates from the constant
    assert rule_for(measured) == replace(DuplicateRule(), cosine=CANDIDATE_COSINE,
                                         descriptor_cosine=DEFAULT_DESCRIPTOR_COSINE)
    loose = replace(copies, metrics={"val": {"threshold_at_p90": 0.4}})  # candidates from 0.4, alone from 0.75
    assert rule_for(loose) == replace(DuplicateRule(), cosine=0.4, descriptor_cosine=DEFAULT_DESCRIPTOR_COSINE)
    for metrics in ({}, {"val": {"threshold_at_p90": float("nan")}}):
        unmeasured = rule_for(replace(copies, metrics=metrics))
        assert (unmeasured.cosine, unmeasured.descriptor_cosine) == (CANDIDATE_COSINE, DEFAULT_DESCRIPTOR_COSINE)
    assert rule_for(measured, descriptor_cosine=0.3).cosine == 0.3  # a lower given descriptor cosine lowers them
    given = rule_for(measured, cosine=0.9, descriptor_cosine=0.95, min_inliers=None)
    assert (given.cosine, given.descriptor_cosine, given.min_inliers) == (0.9, 0.95, None)
    assert rule_for(load_checkpoint(checkpoint_path)) == DuplicateRule()  # a class embedding: no descriptor tier
    with pytest.raises(ValueError, match="descriptor_cosine"):
        rule_for(measured, cosine=0.99, descriptor_cosine=0.5)


def test_dedup_queries_uses_the_checkpoints_rule(unlabelled_index, photos, tmp_path, capsys):
    queries = tmp_path / "queries"
    queries.mkdir()
    shutil.copyfile(photos / "05.jpg", queries / "05.jpg")
    capsys.readouterr()
    assert main(["index", "dedup", unlabelled_index, "--queries", str(queries), "--out", str(tmp_path / "out")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rule"]["descriptor_cosine"] is not None
    assert [c["verdict"]["exact"] for c in result["results"][0]["copies"]][:1] == [True]


def test_search_answers_without_a_vote_and_the_page_hides_the_class_bar(unlabelled_index, photos, tmp_path):
    index = shutil.copytree(unlabelled_index, tmp_path / "index")  # this test writes
    service = SearchService.from_config(ApiConfig(index=str(index), api_token=TOKEN))
    try:
        client = create_app(service=service).test_client()
        image = (photos / "07.jpg").read_bytes()
        answer = client.post("/api/search?k=3", data={"image": (io.BytesIO(image), "q.jpg")})
        assert answer.status_code == 200, answer.get_json()
        body = answer.get_json()
        assert body["prediction"] is None and len(body["neighbors"]) == 3
        assert all(n["label"] is None for n in body["neighbors"])
        classify = client.post("/api/classify", data=image, content_type="image/jpeg").get_json()
        assert classify["prediction"] is None
        filtered = client.post("/api/search?k=3&label=glass", data=image, content_type="image/jpeg")
        assert filtered.status_code == 200 and filtered.get_json()["neighbors"] == []

        stats = client.get("/api/stats").get_json()  # what the page reads to show or hide the class options
        assert stats["label_counts"] == {} and stats["unlabelled_items"] == stats["items"] == 41
        added = client.post("/api/images", headers={"Authorization": f"Bearer {TOKEN}"},
                            data={"image": (io.BytesIO(image), "new.jpg")}, query_string={"duplicates": "keep"})
        assert added.status_code == 201 and added.get_json()["label"] is None
        info = client.get(f"/api/images/{added.get_json()['id']}/info").get_json()
        assert info["label"] is None

        with client.get("/") as page_answer, client.get("/static/app.js") as script_answer:
            page, script = page_answer.get_data(as_text=True), script_answer.get_data(as_text=True)
        assert 'id="class-options"' in page and 'id="prediction"' in page
        assert '$("prediction").hidden = p === null' in script
        assert '$("class-options").hidden = !classes' in script
    finally:
        service.close()


def test_query_prints_neighbours_only(unlabelled_index, photos, capsys):
    capsys.readouterr()
    assert main(["query", str(photos / "07.jpg"), "--index", unlabelled_index, "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{photos / '07.jpg'}:" and len(lines) == 3 and "votes" not in "".join(lines)
    assert main(["query", str(photos / "07.jpg"), "--index", unlabelled_index, "-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["prediction"] is None


def test_the_report_shows_the_map_and_the_duplicate_groups_without_class_metrics(unlabelled_index, tmp_path,
                                                                                  capsys):
    out = tmp_path / "report"
    assert main(["report", "--index", unlabelled_index, "--out", str(out), "--tsne-sample", "41", "--quiet"]) == 0
    document = json.loads((out / "report.json").read_text())
    metrics = document["metrics"]
    assert metrics["labelled"] is False and "no labels" in metrics["class_metrics"]
    assert not {"retrieval", "per_class", "confusion_matrix", "cluster"} & set(metrics)
    assert metrics["tsne"]["points"] == 41 and "tsne" in document["files"]
    assert "confusion" not in document["files"] and "per_class_accuracy" not in document["files"]
    groups = metrics["hygiene"]["gallery_duplicates"]
    assert groups["groups"] >= 1 and groups["exact_groups"] >= 1
    html = (out / "report.html").read_text()
    assert 'id="no-classes"' in html and 'id="tsne"' in html and "Duplicate groups in the gallery" in html
    assert 'id="per-class"' not in html and 'id="confusion"' not in html and 'id="retrieval"' not in html


def test_index_add_takes_a_flat_folder(unlabelled_index, photos, tmp_path, capsys):
    index = shutil.copytree(unlabelled_index, tmp_path / "index")
    more = tmp_path / "more"
    more.mkdir()
    for name in ("03.jpg", "04.jpg"):
        shutil.copyfile(photos / name, more / f"again-{name}")
    capsys.readouterr()
    assert main(["index", "add", str(index), "--data", str(more), "--duplicates", "skip", "--workers", "0",
                 "--quiet"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["added"] == 0 and added["duplicates"]["exact"] == 2  # byte copies, judged by the index's rule
    assert main(["index", "add", str(index), "--data", str(more), "--duplicates", "keep", "--workers", "0",
                 "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 2
    engine = Engine.open(str(index))
    try:
        assert engine.store.label_counts() == {"": 43}  # the store's own count, under the empty label
    finally:
        engine.close()
    assert main(["index", "stats", str(index)]) == 0  # people see the items without a label counted apart
    stats = json.loads(capsys.readouterr().out)
    assert stats["label_counts"] == {} and stats["unlabelled_items"] == stats["ntotal"] == 43


def test_evaluate_compares_two_unlabelled_indexes_on_edited_copies(unlabelled_index, copies_model, tmp_path, capsys):
    from engine.copy_evaluation import copy_queries, score_copies
    from engine.evaluate import NO_DIFFERENCE
    from engine.lifecycle import reembed

    again = str(tmp_path / "again")
    reembed(unlabelled_index, str(copies_model), again, progress=False)  # the same model: the same answers
    capsys.readouterr()
    assert main(["evaluate", "--old", unlabelled_index, "--new", again, "--copies", "20", "--out",
                 str(tmp_path / "eval"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["queries"]["kind"] == "copies" and evaluation["queries"]["used"] == 20
    found = evaluation["copies"]["metrics"]["copy_recall_at_1"]
    assert found["old"]["value"] == found["new"]["value"] and found["difference"]["value"] == 0
    assert evaluation["verdict"] == NO_DIFFERENCE and "copy recall@1" in printed
    assert 'id="copies"' in (tmp_path / "eval" / "evaluation.html").read_text()

    old, new = Engine.open(unlabelled_index), Engine.open(again)
    try:  # the per-query values: the nearest item of each copy, searched by hand
        queries = copy_queries(old, new, 5, np.random.default_rng(3))
        scores = score_copies(old, queries, k=5)
        for row, data in enumerate(queries.images):
            (result,) = old.search([data], k=1)
            assert scores["copy_recall_at_1"][row] == float(result.neighbors[0].id == queries.ids[row])
    finally:
        old.close()
        new.close()
    assert main(["evaluate", "--old", unlabelled_index, "--new", again, "--copies", "0"]) == 2

"""A class index that keeps a copy descriptor per item: built with ``--copy-model``, each item carries both vectors,
and ingestion, ``index dedup`` (``--queries`` too) and the API find duplicates through the descriptors' own view
with the descriptor's rule, while search and the vote stay the class model's."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from api import ApiConfig, SearchService, create_app
from engine.backup import backup_index, restore_index
from engine.duplicate_rule import rule_for
from engine.engine import Engine
from engine.lifecycle import reembed
from engine.reporting import descriptor_neighbours, index_embeddings
from engine.layout import COPY_MODEL_FILE
from index import IndexMismatchError
from similarity.checkpoint import load_checkpoint
from similarity.data import load_labelled_images
from similarity.imageio import open_image
from simsearch.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "api"))
from apitest_helpers import TOKEN  # noqa: E402
from imagecopies import reencode  # noqa: E402


@pytest.fixture(scope="module")
def two_vector_index(checkpoint_path, copies_model, photos, tmp_path_factory) -> str:
    """``photos`` indexed with the Fashion-MNIST class model and the copy descriptor beside it (read-only)."""
    out = tmp_path_factory.mktemp("two-vectors") / "index"
    assert main(["index", "build", "--checkpoint", str(checkpoint_path), "--copy-model", str(copies_model),
                 "--data", str(photos), "--out", str(out), "--workers", "0", "--duplicates", "keep", "--quiet"]) == 0
    return str(out)


def test_every_item_carries_the_descriptor_of_its_copy_model(two_vector_index, copies_model, photos):
    engine = Engine.open(two_vector_index)
    try:
        assert engine.copy_checkpoint.sha256 == load_checkpoint(copies_model).sha256
        calibration = engine.duplicate_calibration  # measured on the descriptors, every item sampled
        assert calibration.items == calibration.sampled + calibration.copies == 41
        assert engine.duplicate_rule == rule_for(engine.copy_checkpoint, calibration=calibration)
        assert engine.duplicate_rule.descriptor_cosine == max(rule_for(engine.copy_checkpoint).descriptor_cosine,
                                                              calibration.cosine)
        assert engine.duplicate_space is engine.store.descriptors
        ids, stored = engine.store.descriptors.all_vectors()
        assert len(ids) == len(engine) == 41
        path = engine.store.get(int(ids[5])).path
        expected = engine.copy_embedder.embed_images([engine.open_file(engine.store.get(int(ids[5])))])[0]
        assert np.allclose(stored[5], expected / np.linalg.norm(expected), atol=1e-5), path
        # searching and voting stay the class model's
        assert engine.store.dim == engine.checkpoint.config.model.embedding_dim
        (result,) = engine.search([photos / "07.jpg"], k=1)
        assert result.neighbors[0].path.endswith("07.jpg")
        stats = engine.stats()
        assert stats["descriptors"]["dim"] == stored.shape[1]
    finally:
        engine.close()


def test_an_upload_is_judged_on_its_descriptor_and_stored_with_it(two_vector_index, photos, tmp_path):
    index = shutil.copytree(two_vector_index, tmp_path / "index")
    service = SearchService.from_config(ApiConfig(index=str(index), api_token=TOKEN))
    try:
        client = create_app(service=service).test_client()
        copy = reencode(photos / "12.jpg", "JPEG", quality=60, size=(80, 60))  # smaller and re-encoded
        added = client.post("/api/images", headers={"Authorization": f"Bearer {TOKEN}"},
                            data={"image": (io.BytesIO(copy), "copy.jpg")})
        body = added.get_json()
        assert added.status_code == 201, body
        engine = service.live.engine
        stats = client.get("/api/stats").get_json()
        assert stats["copy_model"]["checkpoint_sha256"] == engine.copy_checkpoint.sha256
        assert stats["copy_model"]["objective"] == "copies"
        assert stats["duplicate_rule"]["descriptor_cosine"] == engine.duplicate_rule.descriptor_cosine
        assert stats["duplicate_rule"]["calibration"]["items"] == 41  # measured at the upload, before it was stored
        (original,) = [m.id for m in engine.store.iter_items() if m.path.endswith("/12.jpg")]
        assert body["duplicate_of"] == original, body
        stored = engine.store.descriptors.vectors([original, body["id"]])
        # the similarity reported is the descriptors' cosine, not the class embeddings'
        assert body["duplicate_similarity"] == pytest.approx(float(stored[original] @ stored[body["id"]]), abs=1e-4)
        gone = client.delete(f"/api/images/{body['id']}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert gone.status_code == 200
        assert body["id"] not in engine.store.descriptors.vectors([body["id"]])
        assert all(h.id != body["id"] for h in engine.store.descriptors.search(stored[original][None], 5)[0])
    finally:
        service.close()


def test_dedup_and_queries_search_the_descriptors(two_vector_index, photos, tmp_path, capsys):
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "30-small.jpg").write_bytes(reencode(photos / "30.jpg", "JPEG", quality=70, size=(64, 48)))
    capsys.readouterr()
    assert main(["index", "dedup", two_vector_index, "--queries", str(queries), "--out", str(tmp_path / "q")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rule"]["descriptor_cosine"] is not None  # the copy model's rule, not the class model's
    (found,) = result["results"]
    assert any(c["path"].endswith("/30.jpg") for c in found["copies"]), found
    assert main(["index", "dedup", two_vector_index, "--pixels", "--out", str(tmp_path / "d")]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert groups["groups"] >= 1  # copy-of-00.jpg and 00.jpg


def test_a_wrong_or_missing_copy_model_is_refused(two_vector_index, checkpoint_path, copies_model, photos, tmp_path,
                                                  capsys):
    index = Path(shutil.copytree(two_vector_index, tmp_path / "index"))
    shutil.copyfile(checkpoint_path, index / COPY_MODEL_FILE)
    with pytest.raises(IndexMismatchError):
        Engine.open(index)
    (index / COPY_MODEL_FILE).unlink()
    capsys.readouterr()
    for command in (["query", str(photos / "07.jpg"), "--index", str(index)], ["index", "stats", str(index)]):
        assert main(command) == 2
        assert COPY_MODEL_FILE in capsys.readouterr().err
    # a copy model must be a copy descriptor, beside a model that is not one
    for model, copy in ((checkpoint_path, checkpoint_path), (copies_model, copies_model)):
        assert main(["index", "build", "--checkpoint", str(model), "--copy-model", str(copy), "--data", str(photos),
                     "--out", str(tmp_path / "refused"), "--workers", "0", "--quiet"]) == 2
        assert "copy" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "store.sqlite").exists()


def test_backup_and_reembed_keep_the_descriptors(two_vector_index, checkpoint_path, photos, tmp_path):
    index = str(shutil.copytree(two_vector_index, tmp_path / "index"))
    backup_index(index, tmp_path / "backup")
    restore_index(tmp_path / "backup", tmp_path / "restored")
    out = str(tmp_path / "reembedded")
    reembed(index, checkpoint_path, out, progress=False, chunk=16)
    source = Engine.open(index)
    try:
        source.add_image(reencode(photos / "21.jpg", "PNG"), duplicates="keep")  # after the re-embed: caught up
        reembed(index, checkpoint_path, out, progress=False)
        ids, expected = source.store.descriptors.all_vectors()
        for copy in (str(tmp_path / "restored"), out):
            engine = Engine.open(copy)
            try:
                found, stored = engine.store.descriptors.all_vectors()
                assert engine.copy_checkpoint.sha256 == source.copy_checkpoint.sha256
                assert found.tolist() == ids.tolist()[:len(found)] and np.allclose(stored, expected[:len(found)])
                assert len(found) == len(ids) - (copy != out)  # the backup was taken before the add
            finally:
                engine.close()
    finally:
        source.close()


def test_the_report_groups_the_gallery_with_the_descriptors(two_vector_index, tmp_path):
    out = tmp_path / "report"
    assert main(["report", "--index", two_vector_index, "--out", str(out), "--tsne-sample", "41", "--quiet"]) == 0
    groups = json.loads((out / "report.json").read_text())["metrics"]["hygiene"]["gallery_duplicates"]
    assert groups["groups"] >= 1 and groups["exact_groups"] >= 1  # copy-of-00.jpg and 00.jpg


def test_report_leaks_are_searched_by_the_descriptor(checkpoint_path, copies_model, fmnist_folder, tmp_path):
    root = Path(fmnist_folder.paths[0]).parent.parent
    index = tmp_path / "index"
    assert main(["index", "build", "--checkpoint", str(checkpoint_path), "--copy-model", str(copies_model),
                 "--data", str(root), "--out", str(index), "--workers", "0", "--duplicates", "keep", "--quiet"]) == 0
    queries = tmp_path / "queries"
    labels = np.asarray(fmnist_folder.labels)
    rows = [*np.flatnonzero(labels == 0)[:2], *np.flatnonzero(labels == 1)[:2]]  # a query class needs 2 images
    originals = [fmnist_folder.paths[i] for i in rows]
    for n, path in enumerate(originals):  # twice the size, re-encoded: copies of gallery images
        folder = queries / Path(path).parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"copy-{n}.png").write_bytes(reencode(path, "PNG", size=(56, 56)))
    engine = Engine.open(index)
    try:
        gallery = index_embeddings(engine.store, engine.checkpoint.class_names)
        data = load_labelled_images(str(queries))
        found = descriptor_neighbours(engine, data, np.arange(len(data)), gallery)
        for q, path in enumerate(data.paths):
            original = originals[int(Path(path).stem.split("-")[1])]
            copy = engine.copy_embedder.embed_images([open_image(path)])[0]
            row = int(found.indices[q, 0])
            assert gallery.paths[row] == os.path.abspath(original)  # the copy's nearest item by descriptor
            stored = engine.store.descriptors.vectors([int(gallery.ids[row])])[int(gallery.ids[row])]
            assert found.similarities[q, 0] == pytest.approx(float(stored @ copy / np.linalg.norm(copy)), abs=1e-4)
    finally:
        engine.close()
    out = tmp_path / "report"
    assert main(["report", "--index", str(index), "--queries", str(queries), "--out", str(out), "--quiet"]) == 0
    hygiene = json.loads((out / "report.json").read_text())["metrics"]["hygiene"]
    assert hygiene["rule"]["descriptor_cosine"] is not None  # the copy model's rule
    assert hygiene["leakage"]["queries_with_duplicate_in_gallery"] == 4

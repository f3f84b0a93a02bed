"""The duplicates policy at ingestion (``POST /api/images?duplicates=``, ``simsearch index build/add --duplicates``)
on the real fixture index: a PNG re-upload of an indexed image is an exact duplicate, a JPEG q70 re-encode or a
40x40 resize a near one, a Fashion-MNIST image outside the index none."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from api import ApiConfig, SearchService, create_app
from engine.build import index_home
from engine.engine import Engine
from engine.ingestion import find_in_batch
from similarity.hygiene import IDENTICAL_COSINE
from similarity.judge import CONFIRMED_KINDS, KINDS, ImageSignals
from simsearch.cli import main

from imagecopies import outsider_png, reencode

TOKEN = "ingestion-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXACT, NEAR = 10, 250  # fmnist_folder rows re-uploaded as copies



@pytest.fixture
def client(index_copy):
    """A test client of a writable app over this test's private index copy."""
    service = SearchService.from_config(ApiConfig(index=index_copy, api_token=TOKEN))
    yield create_app(service=service).test_client()
    service.close()


@pytest.fixture(scope="module")
def outsider(fmnist_train, fmnist_small) -> bytes:
    """A PNG of a Fashion-MNIST training image that is not one of the 600 indexed ones."""
    return outsider_png(fmnist_train, fmnist_small)


def _post(client, data: bytes, query: str = "", label: str = "Mine"):
    return client.post(f"/api/images{query}", data={"image": (io.BytesIO(data), "new.png"), "label": label},
                       content_type="multipart/form-data", headers=AUTH)


def _uploads(index: str) -> list[str]:
    folder = os.path.join(index_home(index), "uploads")
    return os.listdir(folder) if os.path.isdir(folder) else []


def test_api_flags_exact_and_near_copies_by_default(client, fmnist_folder, ids, outsider):
    paths = fmnist_folder.paths
    exact = _post(client, Path(paths[EXACT]).read_bytes())
    assert exact.status_code == 201, exact.get_json()
    body = exact.get_json()
    assert body["duplicate_of"] == ids[EXACT] and body["duplicate_exact"] is True and body["skipped"] is False
    assert body["duplicate_similarity"] == pytest.approx(1.0, abs=1e-4) and body["id"] != ids[EXACT]
    assert body["duplicate_kind"] == "exact" and body["duplicate_confirmed"] is True
    copies = [ids[NEAR]]  # the resized copy may name the original or the stored JPEG copy, the more similar
    for copy in (reencode(paths[NEAR], "JPEG", quality=70), reencode(paths[NEAR], "PNG", size=(40, 40))):
        near = _post(client, copy, "?duplicates=flag")
        assert near.status_code == 201, near.get_json()
        body = near.get_json()
        assert body["duplicate_of"] in copies and body["duplicate_exact"] is False
        assert body["duplicate_kind"] in KINDS and body["duplicate_kind"] != "exact"
        assert body["duplicate_confirmed"] is (body["duplicate_kind"] in CONFIRMED_KINDS)
        assert 0.99 <= body["duplicate_similarity"] <= 1.0
        copies.append(body["id"])
    distinct = _post(client, outsider)
    assert distinct.status_code == 201
    assert {k: distinct.get_json()[k] for k in ("duplicate_of", "duplicate_similarity", "duplicate_exact",
                                                  "duplicate_kind", "duplicate_confirmed", "skipped")} == {
        "duplicate_of": None, "duplicate_similarity": None, "duplicate_exact": None, "duplicate_kind": None,
        "duplicate_confirmed": None, "skipped": False}
    assert client.get("/api/health").get_json()["items"] == 604  # flagged items are stored


def test_api_skip_answers_the_existing_item_and_stores_nothing(client, fmnist_folder, ids, index_copy,
                                                               outsider):
    for copy, exact in ((Path(fmnist_folder.paths[EXACT]).read_bytes(), True),
                        (reencode(fmnist_folder.paths[NEAR], "JPEG", quality=70), False),
                        (reencode(fmnist_folder.paths[NEAR], "PNG", size=(40, 40)), False)):
        r = _post(client, copy, "?duplicates=skip")
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        original = EXACT if exact else NEAR
        assert body["skipped"] is True and body["id"] == body["duplicate_of"] == ids[original]
        assert body["duplicate_exact"] is exact and body["label"] == fmnist_folder.class_names[
            fmnist_folder.labels[original]]
        assert "Location" not in r.headers
    assert _uploads(index_copy) == [] and client.get("/api/health").get_json()["items"] == 600
    fresh = _post(client, outsider, "?duplicates=skip")  # no duplicate: stored as usual
    assert fresh.status_code == 201 and fresh.get_json()["skipped"] is False
    assert len(_uploads(index_copy)) == 1


def test_api_keep_stores_unchecked_and_bad_policies_are_400(client, fmnist_folder, index_copy):
    r = _post(client, Path(fmnist_folder.paths[EXACT]).read_bytes(), "?duplicates=keep")
    assert r.status_code == 201 and r.get_json()["duplicate_of"] is None and r.get_json()["skipped"] is False
    for bad in ("maybe", "FLAG", "%20skip", ""):
        r = _post(client, Path(fmnist_folder.paths[EXACT]).read_bytes(), f"?duplicates={bad}")
        assert r.status_code == 400 and "duplicates must be one of" in r.get_json()["error"]
    assert client.get("/api/health").get_json()["items"] == 601 and len(_uploads(index_copy)) == 1


@pytest.fixture
def extra_folder(fmnist_folder, outsider, tmp_path) -> Path:
    """A class folder of five images: an exact copy, two near copies, an outsider and an exact copy of it."""
    folder = tmp_path / "extra" / "New"
    folder.mkdir(parents=True)
    paths = fmnist_folder.paths
    (folder / "a_exact.png").write_bytes(Path(paths[EXACT]).read_bytes())
    (folder / "b_jpeg.jpg").write_bytes(reencode(paths[NEAR], "JPEG", quality=70))
    (folder / "c_small.png").write_bytes(reencode(paths[NEAR], "PNG", size=(40, 40)))
    (folder / "d_outsider.png").write_bytes(outsider)
    (folder / "e_outsider_again.bmp").write_bytes(reencode(io.BytesIO(outsider), "BMP"))  # same pixels
    return folder.parent


@pytest.mark.parametrize("policy, added, counts", [
    ("skip", 1, {"exact": 2, "near": 2, "skipped": 4, "flagged": 0}),
    ("flag", 5, {"exact": 2, "near": 2, "skipped": 0, "flagged": 4}),
    ("keep", 5, {"exact": 0, "near": 0, "skipped": 0, "flagged": 0}),
])
def test_cli_add_applies_the_policy_against_the_index_and_within_the_batch(index_copy, extra_folder, capsys,
                                                                           policy, added, counts):
    assert main(["index", "add", index_copy, "--data", str(extra_folder), "--duplicates", policy, "--quiet",
                 "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["added"] == added and result["ntotal"] == 600 + added and result["duplicates"] == counts


def test_cli_add_default_flags(index_copy, extra_folder, capsys):
    assert main(["index", "add", index_copy, "--data", str(extra_folder), "--quiet", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates"]["flagged"] == 4


def test_cli_build_skips_duplicates_within_the_collection(checkpoint_path, fmnist_folder, extra_folder, tmp_path,
                                                          capsys):
    data = extra_folder / "New"
    (data / "c_small.png").unlink()  # two near copies of one image may or may not match each other directly
    for row in (EXACT, NEAR, 480):  # the originals next to their copies
        (data / f"orig_{row}.png").write_bytes(Path(fmnist_folder.paths[row]).read_bytes())
    out = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", checkpoint_path, "--data", str(extra_folder), "--out", str(out),
                 "--duplicates", "skip", "--quiet", "--workers", "0"]) == 0
    built = json.loads(capsys.readouterr().out)
    # originals sort after the copies: the copies are kept, the originals and the outsider's BMP copy skipped
    assert built["added"] == 4 and built["duplicates"] == {"exact": 2, "near": 1, "skipped": 3, "flagged": 0}
    engine = Engine.open(out)
    try:
        names = sorted(os.path.basename(item.path) for item in engine.store.iter_items())
    finally:
        engine.close()
    assert names == ["a_exact.png", "b_jpeg.jpg", "d_outsider.png", "orig_480.png"]


def test_cli_refuses_an_unknown_policy(index_copy, extra_folder, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["index", "add", index_copy, "--data", str(extra_folder), "--duplicates", "maybe"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_without_pixels_only_an_identical_embedding_counts():
    """Unreadable files leave the cosine alone: 0.9995 (distinct images of one class reach that) is not enough."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal(16).astype(np.float32)
    base /= np.linalg.norm(base)
    other = base + 0.03 * rng.standard_normal(16).astype(np.float32)
    other /= np.linalg.norm(other)
    xb = np.stack([base, other, base])
    assert 0.99 < float(base @ other) < IDENTICAL_COSINE
    findings = find_in_batch(xb, lambda row: ImageSignals(f"row{row}.png", error="unreadable"))
    assert findings[0] is None and findings[1] is None
    assert findings[2].earlier_in_batch == 0 and not findings[2].exact
    assert findings[2].verdict.kind == "cosine-only" and not findings[2].verdict.confirmed


def test_skip_leaves_out_confirmed_copies_only_and_flags_what_the_descriptor_alone_found():
    from engine.ingestion import DuplicateFinding, apply_policy
    from similarity.judge import Verdict

    findings = [None, DuplicateFinding(Verdict("exact", 1.0, exact=True), duplicate_of=1),
                DuplicateFinding(Verdict("hash", 0.9, phash_bits=0), duplicate_of=2),
                DuplicateFinding(Verdict("descriptor", 0.8), duplicate_of=3),
                DuplicateFinding(Verdict("cosine-only", 0.99999, readable=False), duplicate_of=4)]
    rows, counts = apply_policy(findings, "skip")
    assert rows.tolist() == [0, 3, 4]
    assert counts.to_dict() == {"exact": 1, "near": 3, "skipped": 2, "flagged": 2}
    rows, counts = apply_policy(findings, "flag")
    assert rows.tolist() == [0, 1, 2, 3, 4] and counts.flagged == 4 and counts.skipped == 0

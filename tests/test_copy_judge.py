"""One duplicate rule everywhere, on the real fixture index (600 Fashion-MNIST PNGs, a really trained model) plus
a real TrashNet photo: the duplicate check at ingestion, ``index dedup`` and the report's leakage give the same
verdicts on the same pairs, an unreadable file included; ``index dedup --queries`` lists the copies of outside
files with their evidence; ``index dedup --remove`` keeps what no pixel evidence confirms."""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.copies import find_copies_of_files
from engine.dedup import find_duplicates
from engine.duplicate_rule import DENSE_MIN_CORRELATION
from engine.engine import Engine
from engine.ingestion import find_new_duplicates
from report.config import EmbeddingSet
from report.hygiene import find_leaks
from similarity.data import load_labelled_images
from similarity.hygiene import DuplicateRule
from similarity.imageio import open_image
from similarity.metrics import score_queries
from simsearch.cli import main

from imagecopies import outsider_png, reencode

TRASHNET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "trashnet-150"
# the fixture's model was trained on 28-px garments: a photo and its crop are candidates at this cosine
RULE = DuplicateRule(cosine=0.95)
EXACT, NEAR, SMALL = 10, 250, 405  # fmnist_folder rows


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _crop(photo: bytes) -> bytes:
    """A crop (8% off the left and top, 5% off the others), resized x0.8 and saved as JPEG q60."""
    image = open_image(photo)
    w, h = image.size
    out = image.crop((round(0.08 * w), round(0.08 * h), round(0.95 * w), round(0.95 * h)))
    out = out.resize((round(out.width * 0.8), round(out.height * 0.8)), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=60)
    return buffer.getvalue()


@pytest.fixture
def scene(index_copy, fmnist_folder, fmnist_train, fmnist_small, tmp_path):
    """``index_copy`` plus a photo and an upload whose stored file is then damaged; and a folder of new files,
    one per expected verdict: ``{name: (indexed id, expected kind)}`` (None: no copy in the index)."""
    photos = sorted((TRASHNET / "glass").iterdir()) if TRASHNET.is_dir() else []
    if not photos:
        pytest.skip(f"TrashNet-150 is not at {TRASHNET}")
    photo = photos[0].read_bytes()
    other = outsider_png(fmnist_train, fmnist_small)
    engine = Engine.open(index_copy)
    try:
        photo_id = engine.add_image(photo, "glass", duplicates="keep").item.id
        lost = engine.add_image(other, "Lost", duplicates="keep").item
    finally:
        engine.close()
    Path(lost.path).write_bytes(b"\x89PNG\r\n\x1a\n damaged on disk")
    folder = tmp_path / "new" / "New"
    (folder / "nested").mkdir(parents=True)
    (folder / "a_exact.png").write_bytes(Path(fmnist_folder.paths[EXACT]).read_bytes())
    (folder / "b_jpeg.jpg").write_bytes(reencode(fmnist_folder.paths[NEAR], "JPEG", quality=70))
    (folder / "nested" / "c_crop.jpg").write_bytes(_crop(photo))
    (folder / "d_of_damaged.png").write_bytes(other)  # the same pixels as the damaged file had
    (folder / "e_distinct.png").write_bytes(Path(photos[1]).read_bytes())
    from index.location import open_store

    store = open_store(index_copy)
    try:
        by_path = {item.path: item.id for item in store.iter_items()}
    finally:
        store.close()
    expected = {"a_exact.png": (by_path[os.path.abspath(fmnist_folder.paths[EXACT])], "exact"),
                "b_jpeg.jpg": (by_path[os.path.abspath(fmnist_folder.paths[NEAR])], "hash"),
                "c_crop.jpg": (photo_id, "verified"),
                "d_of_damaged.png": (lost.id, "cosine-only"),
                "e_distinct.png": (None, None)}
    return index_copy, folder, expected


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def _verdicts_everywhere(index: str, folder: Path, rule: DuplicateRule) -> dict[str, dict]:
    """``{caller: {file name: (indexed id or None, kind or None)}}`` for the files of ``folder``, judged by the
    duplicate check at ingestion, ``index dedup --queries``, the report's leakage and ``index dedup`` (after the
    files are added), all under ``rule``; and the ``index dedup`` report itself under ``"in_index"``."""
    paths = _files(folder)
    names = [os.path.basename(p) for p in paths]
    engine = Engine.open(index)
    try:
        xb = engine.embed(paths)
        at_ingestion = find_new_duplicates(engine.store, xb, paths, rule=rule)
        queried = find_copies_of_files(engine, paths, rule=rule)
        ids, gallery_xb = engine.store.all_vectors()
        metas = engine.store.get_many(ids.tolist())
        engine.add_collection(load_labelled_images(folder.parent, min_per_class=1), duplicates="keep",
                              progress=False)
        in_index = find_duplicates(engine.store, rule=rule, pixels=True)
        new_ids = {os.path.basename(item.path): item.id for item in engine.store.iter_items()
                   if item.path.startswith(str(folder))}
    finally:
        engine.close()
    ingestion = {n: (f.duplicate_of, f.verdict.kind) if f else (None, None) for n, f in zip(names, at_ingestion)}
    queries_found = {n: (r.copies[0]["id"], r.copies[0]["verdict"]["kind"]) if r.copies else (None, None)
                     for n, r in zip(names, queried)}
    # the report: the new files as held-out queries against the gallery as it was
    gallery = EmbeddingSet(gallery_xb, np.zeros(len(ids), np.int64), ["any"], [metas[i].path for i in ids.tolist()])
    queries = EmbeddingSet(xb, np.zeros(len(paths), np.int64), ["any"], paths)
    scores = score_queries(queries.embeddings, queries.labels, gallery.embeddings, gallery.labels, keep=10)
    leaks = {names[leak.query]: (int(ids[leak.gallery]), leak.kind) for leak in find_leaks(queries, gallery, scores, rule)}
    report = {n: leaks.get(n, (None, None)) for n in names}
    # index dedup: the group of each new file and the evidence of its link
    dedup = {}
    for name in names:
        group = next((g for g in in_index.groups if new_ids[name] in [m.id for m in g.members]), None)
        if group is None:
            dedup[name] = (None, None)
            continue
        member = next(m for m in group.members if m.id == new_ids[name])
        dedup[name] = (member.evidence["with"], member.evidence["kind"])
    return {"ingestion": ingestion, "queries": queries_found, "report": report, "dedup": dedup, "in_index": in_index}


def test_ingestion_dedup_and_report_give_the_same_verdicts(scene, fmnist_folder):
    """Every caller gives the same verdicts, with dense verification on too: an edited 28-px copy that neither
    pHash nor keypoints confirm is verified by its aligned pixels, among its candidates, by every caller alike."""
    index, folder, expected = scene
    garment = open_image(fmnist_folder.paths[SMALL])
    (folder / "f_small_crop.png").write_bytes(_png(garment.crop((1, 1, 27, 27)).resize((26, 26),
                                                                                       Image.Resampling.LANCZOS)))
    found = _verdicts_everywhere(index, folder, replace(RULE, min_correlation=DENSE_MIN_CORRELATION))
    item, kind = found["ingestion"].pop("f_small_crop.png")
    assert kind == "verified" and item is not None
    for caller in ("ingestion", "queries", "report", "dedup"):
        assert found[caller].pop("f_small_crop.png", (item, kind)) == (item, kind), caller
        assert found[caller] == expected, (caller, found[caller])
    in_index = found["in_index"]
    damaged = next(g for g in in_index.groups if expected["d_of_damaged.png"][0] in [m.id for m in g.members])
    assert [m.confirmed for m in damaged.members] == [True, False] and damaged.remove == []
    assert in_index.unreadable and all(p.endswith(".png") for p in in_index.unreadable)


def test_dedup_queries_lists_the_copies_of_outside_files(scene, tmp_path, capsys):
    index, folder, expected = scene
    (folder / "nested" / "f_broken.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("not an image file: ignored")
    out = tmp_path / "listing"
    assert main(["index", "dedup", index, "--queries", str(folder.parent), "--threshold", str(RULE.cosine),
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "queries.json").read_text())
    assert printed["queries"] == 6 and printed["with_copies"] == 4 and printed["without_copies"] == 1
    assert printed["unreadable"] == 1
    by_name = {os.path.basename(r["query"]): r for r in printed["results"]}
    broken = by_name.pop("f_broken.jpg")
    assert broken["copies"] == [] and "f_broken.jpg" in broken["error"]
    for name, (item_id, kind) in expected.items():
        copies = by_name[name]["copies"]
        assert by_name[name]["error"] is None
        if item_id is None:
            assert copies == []
            continue
        assert copies[0]["id"] == item_id and copies[0]["verdict"]["kind"] == kind, (name, copies)
    crop = by_name["c_crop.jpg"]["copies"][0]["verdict"]
    assert crop["confirmed"] and crop["inliers"] >= RULE.min_inliers and crop["phash_bits"] > RULE.phash_bits
    assert by_name["d_of_damaged.png"]["copies"][0]["verdict"]["readable"] is False
    assert main(["index", "dedup", index, "--queries", str(folder.parent), "--remove"]) == 2
    assert "--queries" in capsys.readouterr().err


def test_remove_keeps_members_no_pixel_evidence_confirms(scene, capsys):
    index, folder, expected = scene
    engine = Engine.open(index)
    try:
        engine.add_collection(load_labelled_images(folder.parent, min_per_class=1), duplicates="keep",
                              progress=False)
        added = {os.path.basename(item.path): item.id for item in engine.store.iter_items()
                 if item.path.startswith(str(folder))}
        before = len(engine)
    finally:
        engine.close()
    confirmed = sorted(added[n] for n, (_, kind) in expected.items() if kind in ("exact", "hash", "verified"))
    args = ["index", "dedup", index, "--threshold", str(RULE.cosine)]
    assert main([*args, "--remove"]) == 0  # without --pixels: the pixels are decoded anyway
    done = json.loads(capsys.readouterr().out)
    assert done["pixels"] and done["removed"] == confirmed
    assert done["unconfirmed_kept"] == [added["d_of_damaged.png"]] and done["unconfirmed"] == 1
    engine = Engine.open(index)
    try:
        assert len(engine) == before - len(confirmed)
        assert engine.get(added["d_of_damaged.png"]) is not None and engine.get(expected["d_of_damaged.png"][0])
    finally:
        engine.close()
    listing = json.loads((Path(done["json"])).read_text())
    group = next(g for g in listing["groups"] if g["unconfirmed"])
    assert group["remove"] == [] and group["members"][1]["evidence"]["kind"] == "cosine-only"
    assert group["members"][1]["confirmed"] is False

"""Manifest, model-compatibility guard, corrupt/missing files and crash-safe saves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from index import IndexConfig, IndexMismatchError, IndexStore, IndexStoreError
from tests.index.conftest import CONFIGS, DIM, add_items, model_info, vectors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def saved(tmp_path):
    store = IndexStore.create(tmp_path / "idx", DIM, config=CONFIGS["flat"], model_info=model_info())
    add_items(store, vectors(200))
    store.save()
    return tmp_path / "idx"


@pytest.mark.parametrize("field, value", [
    ("checkpoint_sha256", "b" * 64),
    ("embedding_dim", 64),
    ("metric", "l2"),
    ("preprocess", {"resize": 256, "mean": [0.5, 0.5, 0.5]}),
])
def test_model_mismatch_names_the_field(saved, field, value):
    with pytest.raises(IndexMismatchError) as info:
        IndexStore.open(saved, expect_model=model_info(**{field: value}))
    message = str(info.value)
    assert field in message
    if field == "preprocess":
        assert "['resize']" in message and "256" in message and "224" in message
    else:
        assert repr(value) in message and repr(model_info()[field]) in message
    assert info.value.field == field


def test_matching_model_accepted_and_extra_fields_ignored(saved):
    expected = model_info(name="renamed", epoch=3)
    expected["preprocess"] = {"mean": (0.5, 0.5, 0.5), "resize": 224}  # tuples and key order don't matter
    assert len(IndexStore.open(saved, expect_model=expected)) == 200


def test_manifest_contents(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["factory"] == "IDMap2,Flat"
    assert manifest["model"] == model_info() and manifest["counts"]["ntotal"] == 200
    assert manifest["created_at"] and manifest["updated_at"]
    gen = manifest["generation"]
    assert sorted(os.listdir(saved)) == sorted(["manifest.json", f"index.{gen}.faiss", f"meta.{gen}.sqlite"])


def test_create_validates_model_info_and_refuses_existing(tmp_path, saved):
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        IndexStore.create(tmp_path / "n", DIM, config=IndexConfig(), model_info={"embedding_dim": DIM})
    with pytest.raises(ValueError, match="does not match dim"):
        IndexStore.create(tmp_path / "n", DIM, config=IndexConfig(), model_info=model_info(dim=8))
    with pytest.raises(IndexStoreError, match="already holds an index"):
        IndexStore.create(saved, DIM, config=IndexConfig(), model_info=model_info())


def _generation_file(directory, kind: str) -> str:
    manifest = json.loads((directory / "manifest.json").read_text())
    return os.path.join(directory, manifest["files"][kind])


def test_missing_files_give_clear_errors(tmp_path, saved):
    with pytest.raises(IndexStoreError, match="does not exist"):
        IndexStore.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexStoreError, match="manifest.json is missing"):
        IndexStore.open(tmp_path / "empty")
    os.remove(_generation_file(saved, "index"))
    with pytest.raises(IndexStoreError, match="missing"):
        IndexStore.open(saved)


@pytest.mark.parametrize("kind", ["index", "metadata"])
def test_corrupt_files_give_clear_errors(saved, kind):
    path = _generation_file(saved, kind)
    with open(path, "r+b") as handle:
        handle.seek(0)
        handle.write(b"\x00garbage\x00" * 8)
    with pytest.raises(IndexStoreError, match="corrupt"):
        IndexStore.open(saved)
    with pytest.raises(IndexStoreError, match="cannot read|corrupt"):  # faiss/sqlite errors are wrapped too
        IndexStore.open(saved, verify=False)


def test_corrupt_manifest(saved):
    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(IndexStoreError, match="corrupt"):
        IndexStore.open(saved)
    (saved / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(IndexStoreError, match="not a simsearch index"):
        IndexStore.open(saved)


def test_stale_generations_and_temp_files_are_cleaned(saved):
    (saved / "index.99.faiss.tmp").write_bytes(b"half written")
    (saved / "meta.1.sqlite").write_bytes(b"old")
    store = IndexStore.open(saved)
    store.save()
    gen = store.stats()["generation"]
    assert sorted(os.listdir(saved)) == sorted(["manifest.json", f"index.{gen}.faiss", f"meta.{gen}.sqlite"])


_SAVE_LOOP = """
import sys
import numpy as np
from index import IndexStore
store = IndexStore.open(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
while True:
    x = rng.standard_normal((200, {dim})).astype(np.float32)
    store.add(x, labels=["a"] * 200, paths=["p"] * 200)
    store.save()
    print(len(store), flush=True)
""".format(dim=DIM)


def test_save_killed_midway_leaves_a_loadable_index(tmp_path):
    directory = tmp_path / "crash"
    store = IndexStore.create(directory, DIM, config=CONFIGS["flat"], model_info=model_info())
    add_items(store, vectors(100))
    store.save()
    acknowledged = 100
    rng = np.random.default_rng(0)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    kills_after_a_save = 0
    for round_ in range(5):
        child = subprocess.Popen([sys.executable, "-c", _SAVE_LOOP, str(directory), str(round_)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline:  # let it start and save at least once
            time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        reader.join(timeout=5)
        child.stdout.close()
        acked = [int(line) for line in lines if line.strip()]
        if acked:
            kills_after_a_save += 1
            acknowledged = acked[-1]
        reopened = IndexStore.open(directory, expect_model=model_info())
        n = len(reopened)
        assert acknowledged <= n <= acknowledged + 200, (acknowledged, n)  # last ack, or one more save
        assert reopened.stats()["stored_vectors"] == n
        assert len(reopened.search(vectors(2), 5)[0]) == 5
        acknowledged = n
    assert kills_after_a_save >= 3

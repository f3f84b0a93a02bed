"""``simsearch index backup`` / ``restore``: a backup taken while a real server writes holds exactly the writes
up to its log position; a restored index works on another path; restore never overwrites and checks sha256s."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import threading
import time

import pytest
import requests

from api import ApiConfig, SearchService, create_app
from bench.reliability.corpus import png
from bench.reliability.server import ServerProcess
from engine.backup import MANIFEST_FILE, BackupError, BackupManifest, backup_index, restore_index
from index.db import DB_FILE
from index.location import open_store
from simsearch.cli import main

TOKEN = "backup-test-token-8d1e"


class UploadWriter(threading.Thread):
    """POSTs new images to ``/api/images`` until stopped; ``acked``: (id, time acknowledged) of each 201."""

    def __init__(self, url: str) -> None:
        super().__init__(name="backup-test-writer", daemon=True)
        self.url, self.stop, self.acked, self.failures = url, threading.Event(), [], []

    def run(self) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                r = requests.post(f"{self.url}/api/images", headers=auth, data={"label": f"backup-{i}"},
                                  files={"image": ("a.png", png(700_000 + i, size=(40, 40)), "image/png")},
                                  timeout=60)
            except requests.RequestException as exc:
                self.failures.append(str(exc))
                continue
            if r.status_code == 201:
                self.acked.append((r.json()["id"], time.time()))
            else:
                self.failures.append(f"{r.status_code} {r.text[:200]}")

    def wait_for(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            assert time.monotonic() < deadline and self.is_alive(), f"writer stalled: {self.failures[-3:]}"
            time.sleep(0.05)


def add_seqs(index_dir: str) -> dict[int, int]:
    """item id -> seq of its add in the change log of ``index_dir``."""
    conn = sqlite3.connect(f"file:{os.path.join(index_dir, DB_FILE)}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT item_id, seq FROM changes WHERE op = 'add'").fetchall())
    finally:
        conn.close()


def item_ids(index_dir: str) -> set[int]:
    store = open_store(index_dir)
    try:
        return {item.id for item in store.iter_items()}
    finally:
        store.close()


@pytest.fixture
def server(index_copy, tmp_path):
    proc = ServerProcess(index_copy, token=TOKEN, workers=2, threads=2, log_path=str(tmp_path / "server.log"))
    yield proc.start()
    proc.stop(timeout=5)


def test_backup_during_api_writes_holds_the_writes_up_to_its_log_position(server, index_copy, tmp_path):
    before = item_ids(index_copy)
    writer = UploadWriter(server.url)
    writer.start()
    try:
        writer.wait_for(5)
        started = time.time()
        manifest = backup_index(index_copy, tmp_path / "backup")
        finished = time.time()
        acked_at_backup = len(writer.acked)
        writer.wait_for(acked_at_backup + 5)
    finally:
        writer.stop.set()
        writer.join(timeout=120)
    assert not writer.failures
    restore_index(tmp_path / "backup", tmp_path / "restored")

    seqs = add_seqs(index_copy)
    restored = item_ids(str(tmp_path / "restored"))
    acked = dict(writer.acked)
    assert set(acked) <= set(seqs)  # the live log still holds every add (no snapshot pruned it)
    assert restored == before | {i for i in acked if seqs[i] <= manifest.log_head}
    assert not {i for i in acked if seqs[i] > manifest.log_head} & restored
    assert {i for i, at in acked.items() if at < started} <= restored  # acknowledged before the backup began
    assert not {i for i, at in acked.items() if at > finished} & restored  # and after it ended
    assert manifest.items == len(restored) and manifest.uploads == len(restored - before)
    assert json.loads((tmp_path / "backup" / MANIFEST_FILE).read_text())["log_head"] == manifest.log_head


def test_restored_index_opens_on_another_path_and_serves_its_uploads(index_copy, tmp_path):
    uploaded = png(424_242, size=(40, 40))
    service = SearchService.from_config(ApiConfig(index=index_copy, api_token=TOKEN))
    client = create_app(service=service).test_client()
    r = client.post("/api/images", data={"label": "restored-upload", "image": (io.BytesIO(uploaded), "u.png")},
                    headers={"Authorization": f"Bearer {TOKEN}"}, content_type="multipart/form-data")
    assert r.status_code == 201, r.text
    item_id = r.get_json()["id"]
    service.close()

    assert main(["index", "backup", index_copy, str(tmp_path / "backup")]) == 0
    moved = tmp_path / "elsewhere" / "restored"
    assert main(["index", "restore", str(tmp_path / "backup"), str(moved)]) == 0
    shutil.rmtree(index_copy)  # nothing of the restored index may point into the old folder

    service = SearchService.from_config(ApiConfig(index=str(moved)))
    try:
        client = create_app(service=service).test_client()
        info = client.get(f"/api/images/{item_id}/info").get_json()
        assert info["label"] == "restored-upload"
        with client.get(f"/api/images/{item_id}") as served:  # send_file: the response holds the file open
            assert served.status_code == 200 and served.data == uploaded
        r = client.post("/api/search?k=3", data=uploaded, content_type="image/png")
        assert r.status_code == 200 and r.get_json()["neighbors"][0]["id"] == item_id
    finally:
        service.close()
    store = open_store(str(moved))
    try:
        path = store.get(item_id).path
    finally:
        store.close()
    assert path == str(moved / "uploads" / os.path.basename(path))


def test_restore_refuses_a_live_index_and_a_damaged_backup(index_copy, tmp_path, capsys):
    backup = tmp_path / "backup"
    manifest = backup_index(index_copy, backup)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        restore_index(backup, index_copy)
    assert main(["index", "restore", str(backup), index_copy]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    with pytest.raises(FileExistsError):
        backup_index(index_copy, backup)  # nor is a backup written over an existing folder

    (tmp_path / "empty").mkdir()
    restore_index(backup, tmp_path / "empty")  # an empty folder is fine

    model = backup / "model.pt"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(BackupError, match="sha256"):
        restore_index(backup, tmp_path / "from-damaged")
    assert not (tmp_path / "from-damaged").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]
    assert BackupManifest.read(backup).log_head == manifest.log_head


def test_milvus_location_points_to_milvus_backup(tmp_path, capsys):
    assert main(["index", "backup", "milvus://127.0.0.1:19530/photos", str(tmp_path / "b")]) == 2
    assert "milvus-backup" in capsys.readouterr().err
    with pytest.raises(BackupError, match="milvus-backup"):
        backup_index("milvus://127.0.0.1:19530/photos", tmp_path / "b")

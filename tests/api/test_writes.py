"""POST /api/images and DELETE /api/images/<id>: bearer-token auth, persistence, and visibility across
processes (two services on one directory stand in for two gunicorn workers)."""

from __future__ import annotations

import io
import logging
import os

import pytest

from apitest_helpers import TOKEN

from engine.build import index_home

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def add(client, data: bytes, label: str = "Mine", headers=AUTH, url="/api/images"):
    return client.post(url, data={"image": (io.BytesIO(data), "new.png"), "label": label},
                       content_type="multipart/form-data", headers=headers)


def test_writes_disabled_without_configured_token(make_writable_app, png_bytes):
    client = make_writable_app(token=None).test_client()
    for r in (add(client, png_bytes), client.delete("/api/images/1", headers=AUTH)):
        assert r.status_code == 403 and "no API token is configured" in r.get_json()["error"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-000"},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "},
                                     {"Authorization": TOKEN}])
def test_missing_or_wrong_token_is_401(make_writable_app, png_bytes, headers):
    client = make_writable_app().test_client()
    r = add(client, png_bytes, headers=headers)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.delete("/api/images/1", headers=headers).status_code == 401
    assert client.get("/api/health").get_json()["items"] == 600


@pytest.mark.parametrize("param", ["token", "access_token", "api_token"])
def test_token_in_query_string_is_refused(make_writable_app, png_bytes, param):
    client = make_writable_app().test_client()
    r = add(client, png_bytes, headers={}, url=f"/api/images?{param}={TOKEN}")
    assert r.status_code == 401 and "Authorization header" in r.get_json()["error"]
    assert client.get(f"/api/health?{param}=x").status_code == 401
    assert client.get("/api/health").get_json()["items"] == 600  # nothing was added


def test_add_saves_before_answering_and_survives_reopen(make_writable_app, png_bytes, index_copy, caplog, ids):
    caplog.set_level(logging.DEBUG)
    client = make_writable_app().test_client()
    r = add(client, png_bytes, label="My class")
    assert r.status_code == 201, r.get_json()
    item = r.get_json()
    assert item["label"] == "My class" and item["id"] not in ids
    assert r.headers["Location"].endswith(f"/api/images/{item['id']}/info")
    uploads = os.listdir(os.path.join(index_home(index_copy), "uploads"))
    assert len(uploads) == 1 and uploads[0].endswith(".png") and len(uploads[0]) == 36  # uuid hex + .png
    with client.get(f"/api/images/{item['id']}") as got:
        assert got.data == png_bytes
    # a brand-new app (a restart) on the same directory finds it, and search returns it
    fresh = make_writable_app().test_client()
    assert fresh.get(f"/api/images/{item['id']}/info").get_json()["label"] == "My class"
    hits = fresh.post("/api/search?k=2", data=png_bytes, content_type="image/png").get_json()["neighbors"]
    assert {h["id"] for h in hits} == {ids[0], item["id"]}
    assert fresh.get("/api/stats").get_json()["label_counts"]["My class"] == 1
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("label", ["", "   ", "x" * 101, "bad\nlabel"])
def test_add_bad_label_is_400(make_writable_app, png_bytes, label):
    r = add(make_writable_app().test_client(), png_bytes, label=label)
    assert r.status_code == 400 and "label" in r.get_json()["error"]


def test_add_non_image_is_400_and_leaves_nothing(make_writable_app, index_copy):
    client = make_writable_app().test_client()
    assert add(client, b"not an image").status_code == 400
    uploads = os.path.join(index_home(index_copy), "uploads")
    assert not os.path.isdir(uploads) or not os.listdir(uploads)
    assert client.post("/api/images", data=b"x", content_type="image/png", headers=AUTH).status_code == 415
    assert client.get("/api/health").get_json()["items"] == 600


def test_delete_removes_for_good(make_writable_app, png_bytes, index_copy, ids):
    client = make_writable_app().test_client()
    new_id = add(client, png_bytes).get_json()["id"]
    for item_id in (new_id, ids[0]):
        r = client.delete(f"/api/images/{item_id}", headers=AUTH)
        assert r.status_code == 200 and r.get_json() == {"deleted": item_id}
        assert client.get(f"/api/images/{item_id}/info").status_code == 404
        assert client.delete(f"/api/images/{item_id}", headers=AUTH).status_code == 404
    assert os.listdir(os.path.join(index_home(index_copy), "uploads")) == []  # the uploaded file went too
    hits = client.post("/api/search?k=5", data=png_bytes, content_type="image/png").get_json()["neighbors"]
    assert not {ids[0], new_id} & {h["id"] for h in hits}
    fresh = make_writable_app().test_client()
    assert fresh.get(f"/api/images/{ids[0]}/info").status_code == 404
    assert fresh.get("/api/health").get_json()["items"] == 599


@pytest.mark.embedded_only
def test_health_and_stats_say_when_compaction_is_due(make_writable_app, ids):
    """A server snapshots on its own but never rebuilds the index: once deletes reach compact_fraction (20%),
    /api/health and /api/stats say a compaction is due, until simsearch index compact has run."""
    app = make_writable_app()
    client = app.test_client()
    assert client.get("/api/health").get_json()["compaction_due"] is False
    engine = app.extensions["simsearch"].engine
    engine.store.remove(ids[:150])  # 25% of 600
    assert client.get("/api/health").get_json()["compaction_due"] is True
    index = client.get("/api/stats").get_json()["index"]
    assert index["compaction_due"] is True and "150 tombstones" in index["compaction_reason"]
    assert engine.compact()["index"]["rebuilt"]
    index = client.get("/api/stats").get_json()["index"]
    assert index["compaction_due"] is False and index["compaction_reason"] is None and index["tombstones"] == 0


@pytest.mark.embedded_only
def test_an_index_folder_removed_under_the_server_refuses_writes(make_writable_app, png_bytes, index_copy):
    """The index folder moved away while the server runs: /api/health says writes cannot be stored, and an upload
    is refused with 503 instead of being acknowledged into a file that nobody will open again."""
    from api.errors import INDEX_UNUSABLE
    from api.writable import REMOVED

    app = make_writable_app()
    client = app.test_client()
    assert add(client, png_bytes).status_code == 201
    os.rename(index_copy, index_copy + "-moved")
    health = client.get("/api/health").get_json()
    assert health["writable"] is False and health["write_problem"] == REMOVED
    refused = add(client, png_bytes)
    assert refused.status_code == 503 and refused.get_json()["error"] == INDEX_UNUSABLE, refused.get_data(as_text=True)
    assert client.delete("/api/images/0", headers=AUTH).status_code == 503


def test_writes_are_visible_across_processes(make_writable_app, png_bytes):
    """Two services on one directory (as two gunicorn workers): each reloads what the other saved."""
    a, b = make_writable_app().test_client(), make_writable_app().test_client()
    assert b.get("/api/health").get_json()["items"] == 600
    new_id = add(a, png_bytes, label="From A").get_json()["id"]
    assert b.get(f"/api/images/{new_id}/info").get_json()["label"] == "From A"
    # B writes next: it must start from A's generation, not overwrite it
    second = add(b, png_bytes, label="From B").get_json()["id"]
    assert second != new_id
    assert a.get("/api/health").get_json()["items"] == 602
    assert b.delete(f"/api/images/{new_id}", headers=AUTH).status_code == 200
    assert a.get(f"/api/images/{new_id}/info").status_code == 404
    assert make_writable_app().test_client().get("/api/health").get_json()["items"] == 601


def test_concurrent_adds_from_threads_all_persist(make_writable_app, png_bytes):
    from concurrent.futures import ThreadPoolExecutor

    apps = [make_writable_app(), make_writable_app()]

    def one(i: int) -> int:
        r = add(apps[i % 2].test_client(), png_bytes, label=f"c{i % 3}")
        assert r.status_code == 201, r.get_json()
        return r.get_json()["id"]

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(one, range(8)))
    assert len(set(ids)) == 8
    assert make_writable_app().test_client().get("/api/health").get_json()["items"] == 608


@pytest.mark.parametrize("error", ["unavailable", "unusable", "busy", "full", "read-only", "damaged"])
def test_index_errors_are_503_not_a_bad_request(make_writable_app, png_bytes, monkeypatch, caplog, error):
    """``IndexStoreError`` is no ``ValueError``: a down server, a broken index, a locked database, a full or
    read-only disk answers 503 (507 for a full disk) on reads and writes, never 400 (the request was fine), with
    a fixed sentence; the detail goes to the log under the request id that the answer carries."""
    from api.errors import (INDEX_BUSY, INDEX_DAMAGED, INDEX_FULL, INDEX_READ_ONLY, INDEX_UNAVAILABLE,
                            INDEX_UNUSABLE)
    from index import (IndexBusyError, IndexDamagedError, IndexFullError, IndexReadOnlyError, IndexStoreError,
                       IndexUnavailableError)

    exc, status, message = {
        "unavailable": (IndexUnavailableError("Milvus at milvus://h:1/c is unavailable (search: timeout)"), 503,
                        INDEX_UNAVAILABLE),
        "unusable": (IndexStoreError("milvus://h:1/c: the collection does not exist (search)"), 503, INDEX_UNUSABLE),
        "busy": (IndexBusyError("the index database /srv/x/store.sqlite stayed locked"), 503, INDEX_BUSY),
        "full": (IndexFullError("index database /srv/x/store.sqlite: database or disk is full"), 507, INDEX_FULL),
        "read-only": (IndexReadOnlyError("index database /srv/x/store.sqlite: attempt to write a readonly "
                                         "database"), 503, INDEX_READ_ONLY),
        "damaged": (IndexDamagedError("index database /srv/x/store.sqlite: database disk image is malformed"), 503,
                    INDEX_DAMAGED)}[error]
    assert not isinstance(exc, ValueError)
    app = make_writable_app()
    store = app.extensions["simsearch"].engine.store

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(store, "search", fail)
    monkeypatch.setattr(store, "add", fail)
    client = app.test_client()
    searched = client.post("/api/search", data={"image": (io.BytesIO(png_bytes), "q.png")},
                           content_type="multipart/form-data", headers={"X-Request-Id": "client-id-42"})
    added = add(client, png_bytes)
    for r in (searched, added):
        body = r.get_json()
        assert r.status_code == status and body["error"] == message, r.get_data(as_text=True)
        assert str(exc) not in r.get_data(as_text=True) and body["request_id"] == r.headers["X-Request-Id"]
        assert f"request {body['request_id']} " in caplog.text  # the detail is logged under the same id
    assert searched.get_json()["request_id"] == "client-id-42" and str(exc) in caplog.text
    if error in ("unavailable", "busy"):
        assert searched.headers["Retry-After"] == "5"

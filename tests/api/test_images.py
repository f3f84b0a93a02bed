"""GET /api/images/...: files, thumbnails, similar items, random picks; ids are integers looked up in metadata."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image


def get(client, url):
    response = client.get(url)
    response.close()  # file responses hold the file open until closed
    return response


def test_image_file_is_served(client, fmnist_folder, ids):
    with client.get(f"/api/images/{ids[5]}") as r:
        assert r.status_code == 200 and r.mimetype == "image/png"
        assert r.data == Path(fmnist_folder.paths[5]).read_bytes()


@pytest.mark.parametrize("size, fmt, mime", [(64, "jpeg", "image/jpeg"), (128, "png", "image/png"),
                                             (256, "jpeg", "image/jpeg")])
def test_thumbnails(client, size, fmt, mime, ids):
    with client.get(f"/api/images/{ids[7]}?size={size}&format={fmt}") as r:
        assert r.status_code == 200 and r.mimetype == mime
        with Image.open(io.BytesIO(r.data)) as thumb:
            assert max(thumb.size) == size


@pytest.mark.parametrize("query", ["size=100", "size=0", "size=abc", "size=99999999999", "size=64&format=gif"])
def test_bad_thumbnail_parameters_are_400(client, query, ids):
    r = get(client, f"/api/images/{ids[7]}?{query}")
    assert r.status_code == 400 and "error" in r.get_json()


@pytest.mark.parametrize("path", ["/api/images/600", "/api/images/99999999999999999999999",
                                  "/api/images/abc", "/api/images/-1", "/api/images/1.5",
                                  "/api/images/..%2F..%2Fetc%2Fpasswd", "/api/images/%2Fetc%2Fpasswd",
                                  "/api/images/600/similar", "/api/images/600/info", "/api/images/600?size=64"])
def test_unknown_or_non_integer_ids_are_404_json(client, path):
    r = get(client, path)
    assert r.status_code == 404 and r.is_json and "error" in r.get_json()


def test_similar_excludes_the_item_itself(client, ids):
    body = client.get(f"/api/images/{ids[12]}/similar?k=5").get_json()
    assert body["query"]["id"] == ids[12] and len(body["neighbors"]) == 5
    assert ids[12] not in [n["id"] for n in body["neighbors"]]
    assert body["prediction"]["label"] in body["prediction"]["votes"]
    assert client.get(f"/api/images/{ids[12]}/similar?k=0").status_code == 400


def test_info(client, fmnist_folder, ids):
    body = client.get(f"/api/images/{ids[3]}/info").get_json()
    assert body["id"] == ids[3] and body["label"] == fmnist_folder.class_names[fmnist_folder.labels[3]]
    assert "path" not in body  # server paths are never exposed


def test_random(client, ids):
    body = client.get("/api/images/random?n=5").get_json()
    got = [item["id"] for item in body["items"]]
    assert len(set(got)) == 5 and set(got) <= set(ids)
    assert len(client.get("/api/images/random").get_json()["items"]) == 1
    assert client.get("/api/images/random?n=0").status_code == 400
    assert client.get("/api/images/random?n=51").status_code == 400


def test_missing_file_is_404(make_writable_app, ids):
    app = make_writable_app()
    service = app.extensions["simsearch"]
    path = service.item(ids[9]).path
    client = app.test_client()
    # the fixture's PNGs are shared: point the item at a copy of its file and remove that instead
    import shutil

    copy = service.engine.directory + "/copy.png"
    shutil.copyfile(path, copy)
    store = service.engine.store
    new_id = int(store.add(store.reconstruct(ids[9])[None, :], labels=["Dress"], paths=[copy])[0])
    assert get(client, f"/api/images/{new_id}").status_code == 200
    import os

    os.remove(copy)
    r = get(client, f"/api/images/{new_id}")
    assert r.status_code == 404 and "missing" in r.get_json()["error"]
    assert get(client, f"/api/images/{new_id}?size=64").status_code == 404


def test_report(make_writable_app):
    app = make_writable_app()
    client = app.test_client()
    home = app.extensions["simsearch"].engine.directory
    r = get(client, "/report")
    assert r.status_code == 404 and "no report" in r.get_json()["error"]
    import os

    os.makedirs(os.path.join(home, "report"))
    with open(os.path.join(home, "report", "report.html"), "w") as handle:
        handle.write("<html><body><h1>Report</h1><img src='report/fig.png'></body></html>")
    with open(os.path.join(home, "report", "fig.png"), "wb") as handle:
        handle.write(b"\x89PNG fake")
    with client.get("/report") as r:
        assert r.status_code == 200 and b"<h1>Report</h1>" in r.data and r.mimetype == "text/html"
    with client.get("/report/fig.png") as r:
        assert r.status_code == 200
    assert get(client, "/report/../manifest.json").status_code == 404
    assert get(client, "/report/%2E%2E/manifest.json").status_code == 404

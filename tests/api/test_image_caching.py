"""GET /api/images/<id>: every image and thumbnail carries an ETag, a matching If-None-Match is answered 304,
and no cache may reuse a copy without asking first, so a deleted image is gone (404) at once."""

from __future__ import annotations

import io
import os

import pytest

from apitest_helpers import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
URLS = ["/api/images/{id}", "/api/images/{id}?size=64", "/api/images/{id}?size=128&format=png"]


def get(client, url: str, etag: str | None = None):
    with client.get(url, headers={"If-None-Match": etag} if etag else {}) as response:
        response.get_data()
        return response


def assert_revalidated(response) -> None:
    """No shared cache may keep it, and no cache may reuse it without asking the server first."""
    cache_control = response.cache_control
    assert not cache_control.public and cache_control.private and cache_control.no_cache, response.headers
    assert not cache_control.max_age and "Expires" not in response.headers


@pytest.mark.parametrize("url", URLS)
def test_images_carry_an_etag_and_a_matching_conditional_get_is_304(client, ids, url):
    url = url.format(id=ids[4])
    first = get(client, url)
    etag, weak = first.get_etag()
    assert first.status_code == 200 and etag and not weak and first.data
    assert_revalidated(first)

    again = get(client, url, f'"{etag}"')
    assert again.status_code == 304 and again.data == b""
    assert again.get_etag() == (etag, False)
    assert_revalidated(again)
    assert get(client, url, '"another"').status_code == 200
    assert get(client, url, "*").status_code == 304


def test_each_image_and_thumbnail_has_its_own_etag(client, ids):
    etags = {get(client, url.format(id=i)).get_etag()[0] for url in URLS for i in ids[:3]}
    assert len(etags) == len(URLS) * 3
    assert get(client, URLS[0].format(id=ids[0])).get_etag() == get(client, URLS[0].format(id=ids[0])).get_etag()


def test_a_deleted_image_is_404_even_to_a_conditional_get(make_writable_app, png_bytes):
    client = make_writable_app().test_client()
    added = client.post("/api/images", data={"image": (io.BytesIO(png_bytes), "a.png"), "label": "gone"},
                        content_type="multipart/form-data", headers=AUTH)
    assert added.status_code == 201, added.get_json()
    item_id = added.get_json()["id"]
    etags = {url: get(client, url.format(id=item_id)).get_etag()[0] for url in URLS}
    assert all(etags.values())

    assert client.delete(f"/api/images/{item_id}", headers=AUTH).status_code == 200
    for url, etag in etags.items():
        gone = get(client, url.format(id=item_id), f'"{etag}"')
        assert gone.status_code == 404 and gone.is_json and "error" in gone.get_json(), url
        assert "ETag" not in gone.headers and "public" not in gone.headers.get("Cache-Control", "")


def test_the_etag_changes_when_the_file_changes(make_writable_app, png_bytes):
    app = make_writable_app()
    client = app.test_client()
    added = client.post("/api/images", data={"image": (io.BytesIO(png_bytes), "a.png"), "label": "changed"},
                        content_type="multipart/form-data", headers=AUTH)
    item_id = added.get_json()["id"]
    before = {url: get(client, url.format(id=item_id)).get_etag()[0] for url in URLS}
    path = app.extensions["simsearch"].item(item_id).path
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    for url, etag in before.items():
        answer = get(client, url.format(id=item_id), f'"{etag}"')
        assert answer.status_code == 200 and answer.get_etag()[0] != etag, url

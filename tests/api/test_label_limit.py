"""One label limit, ``index.MAX_LABEL_CHARS``: the API (form field and ``?label=`` filter, stripped first), the
store's label filter and the OpenAPI spec all take a label of exactly that length and refuse one longer."""

from __future__ import annotations

import io
import re

import pytest

import api.service
from api.openapi import openapi_spec
from apitest_helpers import TOKEN
from index import MAX_LABEL_CHARS

AUTH = {"Authorization": f"Bearer {TOKEN}"}
AT_LIMIT = "x" * MAX_LABEL_CHARS
OVER = "x" * (MAX_LABEL_CHARS + 1)


def add(client, png_bytes: bytes, label: str):
    return client.post("/api/images", data={"image": (io.BytesIO(png_bytes), "a.png"), "label": label},
                       content_type="multipart/form-data", headers=AUTH)


def search(client, png_bytes: bytes, label: str):
    return client.post("/api/search", query_string={"k": 3, "label": label}, data=png_bytes,
                       content_type="image/png")


def test_the_api_uses_the_index_constant():
    assert api.service.MAX_LABEL_CHARS is MAX_LABEL_CHARS


def test_a_label_at_the_limit_is_accepted_by_the_api_and_the_store(make_writable_app, png_bytes):
    app = make_writable_app()
    client = app.test_client()
    r = add(client, png_bytes, f" \t{AT_LIMIT}\n")  # surrounding whitespace is stripped before counting
    assert r.status_code == 201, r.get_json()
    item = r.get_json()
    assert item["label"] == AT_LIMIT

    hits = search(client, png_bytes, AT_LIMIT).get_json()["neighbors"]
    assert [h["id"] for h in hits] == [item["id"]]
    store = app.extensions["simsearch"].engine.store
    xq = store.reconstruct(item["id"])[None, :]
    assert [n.id for n in store.search(xq, 3, label=AT_LIMIT)[0]] == [item["id"]]


def test_a_label_one_over_the_limit_is_refused_by_the_api_and_the_store(make_writable_app, png_bytes):
    app = make_writable_app()
    client = app.test_client()
    count = len(app.extensions["simsearch"].engine)
    for label in (OVER, f"  {OVER}  "):
        for r in (add(client, png_bytes, label), search(client, png_bytes, label)):
            assert r.status_code == 400, r.get_json()
            message = r.get_json()["error"]
            assert "label" in message and str(MAX_LABEL_CHARS) in message and str(len(OVER)) in message
    assert len(app.extensions["simsearch"].engine) == count  # nothing was stored

    store = app.extensions["simsearch"].engine.store
    xq = store.reconstruct(next(store.iter_items()).id)[None, :]
    with pytest.raises(ValueError, match=f"at most {MAX_LABEL_CHARS} characters"):
        store.search(xq, 3, label=OVER)
    with pytest.raises(ValueError, match=f"at most {MAX_LABEL_CHARS} characters"):
        store.add(xq, labels=[OVER], paths=["/nowhere.png"])
    assert len(store) == count


def test_the_spec_states_the_same_limit(app):
    spec = openapi_spec(app.config["SIMSEARCH_CONFIG"])
    body = spec["paths"]["/api/images"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    label = body["properties"]["label"]
    assert f"{MAX_LABEL_CHARS} characters" in label["description"]
    pattern = re.compile(label["pattern"])
    assert pattern.search(f" {AT_LIMIT} ") and not pattern.search(OVER)
    search_label = [p for p in spec["paths"]["/api/search"]["post"]["parameters"] if p["name"] == "label"]
    assert search_label[0]["schema"] == label

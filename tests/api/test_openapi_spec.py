"""The OpenAPI document is built from data (``api/templates/openapi.json``) with every limit filled in from the
configuration and the code, never written by hand."""

from __future__ import annotations

import json
import re

from api import ApiConfig
from api.openapi import INLINED, MAX_ITEM_ID, label_pattern, load_template, openapi_spec
from api.service import THUMBNAIL_FORMATS
from engine.ingestion import DEFAULT_POLICY, DUPLICATE_POLICIES
from index import MAX_LABEL_CHARS

PATHS = {"/", "/api/classify", "/api/health", "/api/images", "/api/images/random", "/api/images/{item_id}",
         "/api/images/{item_id}/info", "/api/images/{item_id}/similar", "/api/search", "/api/search/batch",
         "/api/stats", "/metrics", "/openapi.json", "/report"}


def walk(node, path=()):
    """Every ``(path, key, value)`` of a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, (*path, i))


def operation_parameter(spec: dict, path: str, method: str, name: str) -> dict:
    return next(p for p in spec["paths"][path][method]["parameters"] if p["name"] == name)


def test_the_template_writes_no_limit_by_hand():
    # (a similarity's [-1, 1] and a score's [0, 1] are facts, not limits)
    numbers = [(path, key, value) for path, key, value in walk(load_template())
               if key in ("maximum", "maxItems", "maxLength") and not isinstance(value, str) and value > 1]
    assert numbers == []
    texts = [value for _, key, value in walk(load_template()) if key in ("summary", "description")]
    hand_written = [text for text in texts  # a number of 2+ digits that is no placeholder and no HTTP status
                    if re.search(r"\d{2,}", re.sub(r"\$\{\w+\}|\b[1-5]\d\d\b", "", text))]
    assert hand_written == []


def test_every_limit_comes_from_the_config_and_the_code():
    config = ApiConfig("unused", default_k=3, max_k=7, max_batch=5, max_random=9, max_upload_bytes=4321,
                       max_pixels=1111, max_request_pixels=2222, thumbnail_sizes=(32, 96))
    spec = openapi_spec(config)
    text = json.dumps(spec)
    assert "${" not in text and "x-fragments" not in text
    assert set(spec["components"]) == {"schemas", "securitySchemes"} and not set(spec["components"]) & set(INLINED)

    for path, method in (("/api/search", "post"), ("/api/classify", "post"), ("/api/search/batch", "post"),
                         ("/api/images/{item_id}/similar", "get")):
        k = operation_parameter(spec, path, method, "k")["schema"]
        assert (k["maximum"], k["default"]) == (7, 3)
        label = operation_parameter(spec, path, method, "label")["schema"]
        assert label["pattern"] == label_pattern() and str(MAX_LABEL_CHARS) in label["description"]
    batch = spec["paths"]["/api/search/batch"]["post"]
    assert batch["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["images"]["maxItems"] == 5
    assert "5 images" in batch["summary"]
    assert operation_parameter(spec, "/api/images/random", "get", "n")["schema"]["maximum"] == 9
    image = spec["paths"]["/api/images/{item_id}"]["get"]
    assert operation_parameter(spec, "/api/images/{item_id}", "get", "size")["schema"]["enum"] == [32, 96]
    assert operation_parameter(spec, "/api/images/{item_id}", "get", "format")["schema"]["enum"] == \
        list(THUMBNAIL_FORMATS)
    assert operation_parameter(spec, "/api/images/{item_id}", "get", "item_id")["schema"]["maximum"] == MAX_ITEM_ID
    duplicates = operation_parameter(spec, "/api/images", "post", "duplicates")["schema"]
    assert (duplicates["enum"], duplicates["default"]) == (list(DUPLICATE_POLICIES), DEFAULT_POLICY)
    assert "4321 bytes" in image["responses"]["413"]["description"]
    assert "2222 pixels" in image["responses"]["413"]["description"]
    assert "1111 pixels" in image["responses"]["400"]["description"]


def test_the_served_document_describes_every_path(client):
    spec = client.get("/openapi.json").get_json()
    assert set(spec["paths"]) == PATHS
    assert spec == json.loads(json.dumps(openapi_spec(client.application.config["SIMSEARCH_CONFIG"])))


def test_image_answers_document_their_validators(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/api/images/{item_id}"]["get"]
    assert {"200", "304"} <= set(operation["responses"])
    for code in ("200", "304"):
        assert {"ETag", "Cache-Control"} <= set(operation["responses"][code]["headers"])
    assert any(p["name"] == "If-None-Match" and p["in"] == "header" for p in operation["parameters"])

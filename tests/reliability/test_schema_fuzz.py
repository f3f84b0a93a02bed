"""Schema fuzzing against a real server (schemathesis, every check), and the checks on the spec that keep the
fuzzing meaningful: every route is described, every operation documents the errors its shape allows, and the
documented label rule is the server's."""

from __future__ import annotations

import io
import random
import re
from contextlib import contextmanager

import hypothesis.configuration
import jsonschema_rs
import pytest
from hypothesis import given, settings
from PIL import Image

from api import ApiConfig, SearchService, create_app
from api.openapi import STRIPPED_WHITESPACE, openapi_spec
from api.service import MAX_LABEL_CHARS
from bench.reliability.schema_fuzz import MAX_SIDE, image_files, run_schema_fuzz

CI_EXAMPLES = 10  # per operation and phase: ~550 requests in ~20 s (server start included) on 2 cores
# schemathesis leaves out the operation that served the schema it loaded
NOT_FUZZED = {"GET /openapi.json"}
UPLOADS = {"POST /api/search": "200", "POST /api/classify": "200", "POST /api/search/batch": "200",
           "POST /api/images": "201"}


def test_schemathesis_finds_nothing_on_a_real_server(start_server, token, built_index, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    hypothesis_home = hypothesis.configuration.storage_directory(intent_to_write=False).home_directory
    server = start_server()

    summary = run_schema_fuzz(server.url, token, max_examples=CI_EXAMPLES, seed=0)

    assert summary["failures"] == []
    assert summary["server_errors"] == 0 and summary["errors"] == []
    assert summary["responses_conform"] and summary["excluded_checks"] == {}
    assert summary["cases_sent"] > 300
    operations = _operations(openapi_spec(ApiConfig(index=built_index)))
    assert set(summary["status_counts_by_operation"]) == operations - NOT_FUZZED
    for label, status in UPLOADS.items():  # generated images got through the decoder, the model and the index
        assert summary["status_counts_by_operation"][label].get(status, 0) >= 3, label
    assert list(cwd.iterdir()) == []  # no report, no .hypothesis, no .schemathesis
    assert hypothesis.configuration.storage_directory(intent_to_write=False).home_directory == hypothesis_home
    assert server.alive()
    assert "Traceback" not in server.log() and token not in server.log()


@pytest.fixture(scope="module")
def app(built_index):
    service = SearchService.from_config(ApiConfig(index=built_index))
    yield create_app(service=service)
    service.close()


def test_every_route_is_described_and_every_operation_is_a_route(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/report/"):  # files, not an API
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes |= {f"{method} {path}" for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == _operations(openapi_spec(app.config["SIMSEARCH_CONFIG"]))


def test_thumbnail_format_is_checked_even_without_size(app):
    # the spec allows only jpeg and png; the server used to ignore any format when no size was given
    client = app.test_client()
    for query, status in (("format=png", 200), ("format=gif", 400), ("format=gif&size=64", 400)):
        with client.get(f"/api/images/3?{query}") as r:
            assert r.status_code == status, query


def test_every_operation_documents_the_errors_its_shape_allows():
    spec = openapi_spec(ApiConfig(index="unused"))
    assert spec["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            # a credential in the URL, a body or a request line over the limit: refused everywhere
            expected = {401, 413, 414, 500}
            if any(p["in"] == "query" for p in operation.get("parameters", [])) or "requestBody" in operation:
                expected.add(400)
            if "{item_id}" in path or path == "/report":
                expected.add(404)
            if "requestBody" in operation:
                expected.add(415)
            if "security" in operation:  # writes: disabled without a token
                expected.add(403)
            if path.startswith("/api/"):  # reads and writes of the index: busy, or its server (Milvus) down
                expected.add(503)
            if "security" in operation:  # writes: the index's disk full
                expected.add(507)
            errors = {int(code): answer for code, answer in operation["responses"].items() if int(code) >= 400}
            assert set(errors) == expected, (method, path)
            for code, answer in errors.items():
                assert answer["description"]
                if code == 414:  # gunicorn answers before the application sees the request
                    assert answer["content"] == {"text/html": {"schema": {"type": "string"}}}
                    continue
                assert answer["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def test_documented_label_rule_is_the_servers():
    spec = openapi_spec(ApiConfig(index="unused"))
    schema = spec["paths"]["/api/images"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    validator = jsonschema_rs.validator_for(schema)
    pattern = re.compile(schema["properties"]["label"]["pattern"])  # hypothesis generates with Python's re
    whitespace = re.compile(f"[{STRIPPED_WHITESPACE}]")
    assert all(bool(whitespace.match(chr(c))) == chr(c).isspace() for c in range(0x110000))
    alphabet = ["a", "é", " ", "\t", "\n", "\x00", "\x1f", "\x7f", "\xa0", "\u2003", "\x85", "\x1c", "\u200b",
                "\ufeff", "\u3000"]
    rng = random.Random(0)
    labels = ["", " ", "shirt", " shirt\n", "a\x00b", "\x00a", "T-shirt/top", "x" * MAX_LABEL_CHARS,
              "x" * (MAX_LABEL_CHARS + 1), f" {'x' * MAX_LABEL_CHARS} ", f"\t{'x' * MAX_LABEL_CHARS}\n"]
    labels += ["".join(rng.choice(alphabet) if rng.random() < 0.3 else "x" for _ in range(n))
               for n in rng.choices([1, 2, 3, 5, MAX_LABEL_CHARS - 1, MAX_LABEL_CHARS, MAX_LABEL_CHARS + 1,
                                     MAX_LABEL_CHARS + 2], k=3000)]
    for label in labels:
        accepted = _server_accepts_label(label)
        assert validator.is_valid({"image": "<file>", "label": label}) == accepted, repr(label)
        assert bool(pattern.search(label)) == accepted, repr(label)


def test_image_strategies_make_small_decodable_images(tmp_path):
    formats = set()

    @settings(max_examples=40, database=None, derandomize=True, deadline=None)
    @given(png=image_files("PNG"), jpeg=image_files("JPEG"))
    def check(png: bytes, jpeg: bytes) -> None:
        for data, fmt in ((png, "PNG"), (jpeg, "JPEG")):
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                assert image.format == fmt and image.mode in ("L", "RGB")
                assert 1 <= image.width <= MAX_SIDE and 1 <= image.height <= MAX_SIDE
                formats.add((fmt, image.mode))

    with _hypothesis_home(tmp_path):
        check()
    assert len(formats) == 4


def _operations(spec: dict) -> set[str]:
    return {f"{method.upper()} {path}" for path, methods in spec["paths"].items() for method in methods}


def _server_accepts_label(label: str) -> bool:
    try:
        SearchService.check_label(label)
    except ValueError:
        return False
    return True


@contextmanager
def _hypothesis_home(directory):
    """Hypothesis' caches in ``directory`` (instead of ``<cwd>/.hypothesis``) while the block runs."""
    previous = hypothesis.configuration.storage_directory(intent_to_write=False).home_directory
    hypothesis.configuration.set_hypothesis_home_dir(directory)
    try:
        yield
    finally:
        hypothesis.configuration.set_hypothesis_home_dir(previous)


"""docs/api.md and ``GET /openapi.json`` describe the same endpoints: every operation of the spec has its
section (a heading ``### METHOD /path``), every such heading is an operation of the spec, and each section
names every status the spec lists for its operation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
HEADING = re.compile(r"^### (GET|POST|PUT|PATCH|DELETE) (/\S*)\s*$")
METHODS = {"get", "post", "put", "patch", "delete"}


def doc_sections() -> dict[str, str]:
    """``{"METHOD /path": text of its section}``, a section running to the next heading of level 2 or 3."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in API_DOC.read_text(encoding="utf-8").splitlines():
        match = HEADING.match(line)
        if match:
            current = f"{match[1]} {match[2]}"
            assert current not in sections, f"two sections for {current}"
            sections[current] = []
        elif line.startswith(("## ", "### ")):
            current = None
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


@pytest.fixture(scope="module")
def spec_operations(shared_service) -> dict[str, dict]:
    from api import create_app

    spec = create_app(service=shared_service).test_client().get("/openapi.json").get_json()
    return {f"{method.upper()} {path}": operation for path, methods in spec["paths"].items()
            for method, operation in methods.items() if method in METHODS}


def test_every_operation_has_a_section_and_every_section_an_operation(spec_operations):
    sections = doc_sections()
    assert sorted(set(spec_operations) - set(sections)) == [], "operations without a section in docs/api.md"
    assert sorted(set(sections) - set(spec_operations)) == [], "sections of docs/api.md that are no operation"


def test_each_section_names_every_status_of_its_operation(spec_operations):
    sections = doc_sections()
    missing = {name: [code for code in operation["responses"] if not re.search(rf"\b{code}\b", sections[name])]
               for name, operation in spec_operations.items()}
    assert {name: codes for name, codes in missing.items() if codes} == {}


def test_the_doc_speaks_of_the_product_only():
    text = API_DOC.read_text(encoding="utf-8").lower()
    assert not re.search(r"\bissue\b|\bwas (added|changed|fixed)\b|\bnow\b|\bused to\b", text)


def test_the_limits_table_states_the_defaults():
    from api import ApiConfig
    from index import MAX_LABEL_CHARS

    config = ApiConfig("unused")
    rows = {line.split("|")[1].strip(): line.split("|")[2] for line in API_DOC.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and line.count("|") == 4}
    expected = {"neighbours per request (`k`)": [f"1..{config.max_k}", f"default {config.default_k}"],
                "images per batch": [str(config.max_batch)],
                "request body": [f"({config.max_upload_bytes} bytes)"],
                "pixels of one image": [str(config.max_pixels)],
                "pixels of all images of one request": [str(config.max_request_pixels)],
                "random items per request (`n`)": [str(config.max_random)],
                "thumbnail sizes": [", ".join(map(str, config.thumbnail_sizes))],
                "label length": [f"{MAX_LABEL_CHARS} characters"]}
    for name, texts in expected.items():
        assert all(text in rows[name] for text in texts), (name, rows.get(name))

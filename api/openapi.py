"""The OpenAPI 3.1 description of every endpoint (served at ``GET /openapi.json``).

The description is data, ``api/templates/openapi.json``.  Every limit in it is a placeholder ``${name}``, filled
in here from the constants and the :class:`ApiConfig` that the server enforces (:func:`spec_values`): a string
that is only a placeholder becomes the value itself (a number, a list), one inside a text becomes its decimal
form.  The template names the parts that several operations share once (``components/parameters``,
``requestBodies``, ``responses``, ``headers`` and ``x-fragments``); they are written out in place, so that each operation of
the served document reads on its own.  ``tests/reliability/test_schema_fuzz.py`` checks that every route is
described, and fuzzes a real server with schemathesis: every answer must match the documented schemas, every
schema-valid request must be accepted and every schema-violating one refused.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path

from api.config import ApiConfig
from api.params import FALSE_WORDS, TRUE_WORDS
from api.service import THUMBNAIL_FORMATS
from engine.ingestion import DEFAULT_POLICY, DUPLICATE_POLICIES
from index import MAX_LABEL_CHARS

TEMPLATE = Path(__file__).resolve().parent / "templates" / "openapi.json"
INLINED = ("parameters", "requestBodies", "responses", "headers", "x-fragments")  # written out in place
MAX_ITEM_ID = 2**63 - 1  # ids are int64
# the characters for which str.isspace() is true (what str.strip() removes), as a regex class body
STRIPPED_WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def label_pattern(max_chars: int = MAX_LABEL_CHARS) -> str:
    """The label rule of :meth:`SearchService.check_label` as an ECMA-262 regex: stripped (``str.strip``),
    then 1..``max_chars`` characters and no control character (U+0000..U+001F, U+007F).  Python's whitespace
    is spelled out, since ``\\s`` differs between Python and the regexes of JSON Schema."""
    space = rf"[{STRIPPED_WHITESPACE}]"
    inner = r"[^\x00-\x1f\x7f]"
    edge = rf"[^{STRIPPED_WHITESPACE}\x00-\x1f\x7f]"
    return rf"^{space}*{edge}(?:{inner}{{0,{max_chars - 2}}}{edge})?{space}*$"


def spec_values(config: ApiConfig) -> dict:
    """The value of every placeholder of the template: the limits of ``config`` and of the code."""
    return {
        "default_k": config.default_k, "max_k": config.max_k, "max_batch": config.max_batch,
        "max_random": config.max_random, "thumbnail_sizes": list(config.thumbnail_sizes),
        "thumbnail_formats": list(THUMBNAIL_FORMATS), "max_upload_bytes": config.max_upload_bytes,
        "max_pixels": config.max_pixels, "max_request_pixels": config.max_request_pixels,
        "max_item_id": MAX_ITEM_ID, "max_label_chars": MAX_LABEL_CHARS, "label_pattern": label_pattern(),
        "boolean_words": [*TRUE_WORDS, *FALSE_WORDS], "duplicate_policies": list(DUPLICATE_POLICIES),
        "default_policy": DEFAULT_POLICY,
    }


@cache
def load_template() -> dict:
    """The template as stored (read once per process; callers must not change it)."""
    return json.loads(TEMPLATE.read_text(encoding="utf-8"))


def openapi_spec(config: ApiConfig) -> dict:
    """The spec, with the limits of ``config`` and the shared parts written out in place."""
    template = load_template()
    components = template["components"]
    values = spec_values(config)

    def build(node):
        if isinstance(node, dict):
            section, _, name = node.get("$ref", "").removeprefix("#/components/").partition("/")
            if section in INLINED:
                return build(components[section][name])
            return {key: build(value) for key, value in node.items()}
        if isinstance(node, list):
            return [build(value) for value in node]
        if isinstance(node, str):
            return fill_placeholders(node, values)
        return node

    spec = {key: build(value) for key, value in template.items() if key != "components"}
    spec["components"] = {key: build(value) for key, value in components.items() if key not in INLINED}
    return spec


def fill_placeholders(text: str, values: dict):
    """``text`` with its ``${name}`` placeholders filled in (KeyError for an unknown name)."""
    whole = _PLACEHOLDER.fullmatch(text)
    if whole:
        return copy.deepcopy(values[whole.group(1)])
    return _PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), text)

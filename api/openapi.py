"""The OpenAPI 3.1 description of every endpoint (served at ``GET /openapi.json``).

Kept next to the views by hand; ``tests/reliability/test_schema_fuzz.py`` checks that every route is
described, and fuzzes a real server with schemathesis: every answer must match the documented schemas, every
schema-valid request must be accepted and every schema-violating one refused.
"""

from __future__ import annotations

from api.config import ApiConfig
from api.service import MAX_LABEL_CHARS
from engine import DEFAULT_POLICY, DUPLICATE_POLICIES

JSON = "application/json"
# the characters for which str.isspace() is true (what str.strip() removes), as a regex class body
STRIPPED_WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _errors(*codes: int) -> dict:
    """The error answers ``codes`` (503 for every operation that reads or writes the index: busy, or its
    server unreachable), and those that every endpoint may give: 401 for a credential-like query
    parameter (``token``, ``key``, ...: credentials go in the Authorization header only), 413 for a body over
    the upload limit (checked before anything reads it), 414 for a request line over the HTTP server's limit
    (gunicorn answers it, in HTML, before the application sees the request) and 500."""
    text = {400: "Bad parameter, missing field or undecodable image",
            401: "Missing or invalid bearer token, or a credential in the URL",
            403: "Writes are disabled (no token configured on the server)", 404: "Unknown id or missing file",
            413: "Request larger than the upload limit, or its images over the request's pixel budget",
            415: "Unsupported content type", 500: "Unexpected server error",
            503: "The index is busy with other writers, or its server (Milvus) is unreachable; nothing was "
                 "written, retry"}
    if 401 not in codes:
        text[401] = "A credential in the URL (query parameter token, key, ...): use the Authorization header"
    answers = {str(c): _error(text[c]) for c in sorted({*codes, 401, 413, 500})}
    answers["414"] = {"description": "Request line longer than the HTTP server's limit (an HTML page from gunicorn)",
                      "content": {"text/html": {"schema": {"type": "string"}}}}
    return dict(sorted(answers.items()))


def openapi_spec(config: ApiConfig) -> dict:
    """The spec, with the limits (``max_k``, batch size, thumbnail sizes) of ``config``."""
    k_param = {"name": "k", "in": "query", "required": False, "description": "How many neighbours",
               "schema": {"type": "integer", "minimum": 1, "maximum": config.max_k, "default": config.default_k}}
    weighted_param = {"name": "weighted", "in": "query", "required": False,
                      "description": "Weight each neighbour's vote by its score (1 + cosine) / 2 (case-insensitive; "
                                     "empty means false)",
                      "schema": {"type": "string", "default": "false",
                                 "enum": ["true", "false", "1", "0", "yes", "no", "on", "off", ""]}}
    id_param = {"name": "item_id", "in": "path", "required": True, "description": "Item id (from search results)",
                "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}
    # The server sniffs the format from the bytes (any format Pillow decodes); a part's or body's declared
    # type is not checked, and bytes that are no image are answered 400.
    image_file = {"type": "string", "format": "binary", "description": "An image file (PNG, JPEG, ...)"}
    image_part = {"contentType": "image/*"}
    image_body = {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": image_file}}, "encoding": {"image": image_part}},
        "application/octet-stream": {"schema": image_file},
        "image/*": {"schema": image_file},
    }}
    # The server strips the label (str.strip), then wants 1..MAX_LABEL_CHARS characters and no control
    # character (U+0000..U+001F, U+007F): the pattern says exactly that, with Python's whitespace spelled out
    # (\s differs between Python and the ECMA-262 regexes of JSON Schema).
    space = rf"[{STRIPPED_WHITESPACE}]"
    inner = r"[^\x00-\x1f\x7f]"
    edge = rf"[^{STRIPPED_WHITESPACE}\x00-\x1f\x7f]"
    label = {"type": "string", "minLength": 1,
             "pattern": rf"^{space}*{edge}(?:{inner}{{0,{MAX_LABEL_CHARS - 2}}}{edge})?{space}*$",
             "description": f"The class of the image: {MAX_LABEL_CHARS} characters at most once surrounding "
                            f"whitespace is stripped, no control characters"}
    label_param = {"name": "label", "in": "query", "required": False,
                   "description": "Only neighbours of this class (the filter runs inside the index search, so a "
                                  "rare class still gets its k neighbours); surrounding whitespace is stripped",
                   "schema": label}
    bearer = [{"bearerAuth": []}]
    search_ops = {"parameters": [k_param, weighted_param, label_param], "requestBody": image_body}
    paths = {
        "/api/search": {"post": {
            "summary": "Nearest indexed images and the majority-vote class of an uploaded image",
            "operationId": "search", **search_ops,
            "responses": {"200": _json(_ref("SearchResponse"), "Neighbours, prediction and timings"),
                          **_errors(400, 415, 503)}}},
        "/api/classify": {"post": {
            "summary": "Only the majority-vote class of an uploaded image", "operationId": "classify",
            **search_ops,
            "responses": {"200": _json(_ref("ClassifyResponse"), "Prediction and timings"),
                          **_errors(400, 415, 503)}}},
        "/api/search/batch": {"post": {
            "summary": f"Search with up to {config.max_batch} images at once", "operationId": "searchBatch",
            "parameters": [k_param, weighted_param, label_param],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["images"], "properties": {"images": {
                    "type": "array", "minItems": 1, "maxItems": config.max_batch, "items": image_file,
                    "description": "One file part per image, all named images"}}}}}},
            "responses": {"200": _json(_ref("BatchResponse"), "One result per image, in order"),
                          **_errors(400, 415, 503)}}},
        "/api/images": {"post": {
            "summary": "Add an image with its label (needs the bearer token); durable before answering",
            "operationId": "addImage", "security": bearer,
            "parameters": [{"name": "duplicates", "in": "query", "required": False,
                            "description": "What to do when the upload duplicates an indexed image (the same "
                                           "pixels, or a near copy: embedding cosine confirmed by pHash): keep "
                                           "(store it unchecked), flag (store it and name the duplicate) or skip "
                                           "(store nothing, answer 200 with the existing item)",
                            "schema": {"type": "string", "enum": list(DUPLICATE_POLICIES),
                                       "default": DEFAULT_POLICY}}],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["image", "label"], "properties": {
                    "image": image_file, "label": label}},
                "encoding": {"image": image_part}}}},
            "responses": {"200": _json(_ref("AddedItem"), "Skipped (duplicates=skip): nothing stored, the existing "
                                                           "item it duplicates"),
                          "201": _json(_ref("AddedItem"), "The new item, and the indexed item it duplicates if any"),
                          **_errors(400, 401, 403, 415, 503)}}},
        "/api/images/random": {"get": {
            "summary": "Random indexed images", "operationId": "randomImages",
            "parameters": [{"name": "n", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": config.max_random,
                                       "default": 1}}],
            "responses": {"200": _json({"type": "object", "required": ["items"], "properties": {
                "items": {"type": "array", "items": _ref("Item")}}}, "Up to n distinct items"),
                **_errors(400, 503)}}},
        "/api/images/{item_id}": {
            "get": {"summary": "The stored image file, or a JPEG/PNG thumbnail with ?size=",
                    "operationId": "getImage",
                    "parameters": [id_param,
                                   {"name": "size", "in": "query", "required": False,
                                    "description": "Thumbnail size in pixels (longest side)",
                                    "schema": {"type": "integer", "enum": list(config.thumbnail_sizes)}},
                                   {"name": "format", "in": "query", "required": False,
                                    "description": "Thumbnail format (used only with size; case-insensitive)",
                                    "schema": {"type": "string", "enum": ["jpeg", "png"], "default": "jpeg"}}],
                    "responses": {"200": {"description": "Image bytes", "content": {
                        "image/*": {"schema": {"type": "string", "format": "binary"}},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                        **_errors(400, 404, 503)}},
            "delete": {"summary": "Delete an item for good (needs the bearer token)", "operationId": "deleteImage",
                       "security": bearer, "parameters": [id_param],
                       "responses": {"200": _json({"type": "object", "required": ["deleted"], "properties": {
                           "deleted": {"type": "integer"}}}, "Deleted"), **_errors(401, 403, 404, 503)}}},
        "/api/images/{item_id}/info": {"get": {
            "summary": "Metadata of one item", "operationId": "getImageInfo", "parameters": [id_param],
            "responses": {"200": _json(_ref("Item"), "The item"), **_errors(404, 503)}}},
        "/api/images/{item_id}/similar": {"get": {
            "summary": "Nearest other items of an indexed item (itself excluded)", "operationId": "similar",
            "parameters": [id_param, k_param, weighted_param, label_param],
            "responses": {"200": _json(_ref("SimilarResponse"), "The item, its neighbours and their vote"),
                          **_errors(400, 404, 503)}}},
        "/api/health": {"get": {"summary": "Liveness", "operationId": "health",
                                "responses": {"200": _json(_ref("Health"), "Serving"), **_errors(503)}}},
        "/api/stats": {"get": {"summary": "Counts per class, model and index info", "operationId": "stats",
                               "responses": {"200": _json(_ref("Stats"), "Statistics"), **_errors(503)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)", "operationId": "metrics",
                             "responses": {"200": {"description": "Metrics", "content": {
                                 "text/plain": {"schema": {"type": "string"}}}}, **_errors()}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_errors()}}},
        "/report": {"get": {"summary": "The latest HTML report of the index, if one was generated",
                            "operationId": "report",
                            "responses": {"200": {"description": "HTML", "content": {
                                "text/html": {"schema": {"type": "string"}}}}, **_errors(404)}}},
        "/": {"get": {"summary": "The web page", "operationId": "page",
                      "responses": {"200": {"description": "HTML", "content": {
                          "text/html": {"schema": {"type": "string"}}}}, **_errors()}}},
    }
    number = {"type": "number"}
    timings = {"type": "object", "additionalProperties": number, "description": "Milliseconds per step",
               "properties": {name: number for name in ("decode", "embed", "search", "vote", "total")}}
    neighbor = {"type": "object", "required": ["rank", "id", "label", "similarity", "score", "image_url",
                                               "thumbnail_url"], "properties": {
        "rank": {"type": "integer", "minimum": 1}, "id": {"type": "integer"}, "label": {"type": "string"},
        "similarity": {"type": "number", "minimum": -1, "maximum": 1,
                       "description": "Cosine similarity of the embeddings"},
        "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "(1 + similarity) / 2"},
        "image_url": {"type": "string"}, "thumbnail_url": {"type": "string"}}}
    prediction = {"type": "object", "required": ["label", "confidence", "votes", "weighted", "is_unknown"],
                  "properties": {
                      "label": {"type": ["string", "null"], "description": "null only for an empty index"},
                      "confidence": {"type": "number", "minimum": 0, "maximum": 1,
                                     "description": "The winner's share of the votes"},
                      "votes": {"type": "object", "additionalProperties": number,
                                "description": "Votes per class (counts, or summed scores when weighted)"},
                      "weighted": {"type": "boolean"}, "is_unknown": {"type": "boolean"}}}
    search = {"type": "object", "required": ["k", "neighbors", "prediction"], "properties": {
        "k": {"type": "integer"}, "neighbors": {"type": "array", "items": _ref("Neighbor")},
        "prediction": _ref("Prediction"), "timings_ms": _ref("Timings")}}
    item = {"type": "object", "required": ["id", "label", "image_url", "thumbnail_url"], "properties": {
        "id": {"type": "integer"}, "label": {"type": "string"},
        "added_at": {"type": "number", "description": "Unix time"},
        "image_url": {"type": "string"}, "thumbnail_url": {"type": "string"}}}
    added = {"type": "object", "required": [*item["required"], "duplicate_of", "duplicate_similarity",
                                             "duplicate_exact", "skipped"], "properties": {
        **item["properties"],
        "duplicate_of": {"type": ["integer", "null"], "description": "The indexed item it duplicates (null: none "
                                                                      "found, or duplicates=keep)"},
        "duplicate_similarity": {"type": ["number", "null"], "minimum": -1, "maximum": 1,
                                 "description": "Cosine similarity of the embeddings to duplicate_of"},
        "duplicate_exact": {"type": ["boolean", "null"], "description": "The same decoded pixels (else a near copy)"},
        "skipped": {"type": "boolean", "description": "Nothing was stored: id is the existing item's"}}}
    schemas = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Timings": timings, "Neighbor": neighbor, "Prediction": prediction, "SearchResponse": search,
        "Item": item, "AddedItem": added,
        "ClassifyResponse": {"type": "object", "required": ["k", "prediction"], "properties": {
            "k": {"type": "integer"}, "prediction": _ref("Prediction"), "timings_ms": _ref("Timings")}},
        "BatchResponse": {"type": "object", "required": ["k", "results"], "properties": {
            "k": {"type": "integer"}, "results": {"type": "array", "items": _ref("SearchResponse")},
            "timings_ms": _ref("Timings")}},
        "SimilarResponse": {"type": "object", "required": ["query", "k", "neighbors", "prediction"],
                            "properties": {"query": _ref("Item"), **search["properties"]}},
        "Health": {"type": "object", "required": ["status", "items"], "properties": {
            "status": {"type": "string", "enum": ["ok"]}, "items": {"type": "integer"},
            "backend": {"type": "string", "enum": ["faiss-sqlite", "milvus"]},
            "runtime": {"type": "string", "enum": ["torch", "onnx"], "description": "What runs the model"},
            "log_head": {"type": ["integer", "null"]}, "uptime_s": number, "pid": {"type": "integer"}}},
        "Stats": {"type": "object", "required": ["items", "label_counts", "model", "index"], "properties": {
            "items": {"type": "integer"},
            "label_counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "model": {"type": "object"}, "index": {"type": "object"}, "writes_enabled": {"type": "boolean"},
            "limits": {"type": "object"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "simsearch", "version": "1.0.0",
                 "description": "Image similarity search: upload an image, get the nearest indexed images and "
                                "a majority-vote class. Every error is JSON {\"error\": message}."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
    }

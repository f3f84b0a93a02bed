"""The bad-input suite: every kind of broken, hostile or merely odd upload, parameter and id, sent to every
endpoint that takes it on a real server, each with the status it must get.

A refused request must answer a JSON ``{"error": ...}`` with the expected 4xx, never a 5xx, never a stack
trace or the write token, and must leave the index directory byte-for-byte unchanged; the server must keep
serving after each one.  Odd but valid images (16-bit, CMYK, EXIF-rotated, animated, ...) must be searched
(200) and added (201) like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bench.reliability import corpus
from bench.reliability.http import Answer, Part, multipart, send
from bench.reliability.snapshot import differences, fingerprint

logger = logging.getLogger(__name__)

# endpoint name -> (method, path, file field)
ENDPOINTS = {"search": ("POST", "/api/search", "image"), "classify": ("POST", "/api/classify", "image"),
             "batch": ("POST", "/api/search/batch", "images"), "add": ("POST", "/api/images", "image")}
READ_ENDPOINTS = ("search", "classify", "batch")
ALL_ENDPOINTS = (*READ_ENDPOINTS, "add")
LABEL = "bad-input"


@dataclass(frozen=True)
class Request:
    path_and_query: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Case:
    """One kind of input: ``build(endpoint, token)`` makes the request for an endpoint, ``expect`` maps each
    endpoint it applies to onto the status it must get."""

    kind: str
    expect: dict[str, int]
    build: Callable[[str, str], Request]
    category: str = "upload"


@dataclass
class Limits:
    max_batch: int
    max_upload_bytes: int


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _multipart_request(endpoint: str, token: str, parts: list[Part], query: str = "",
                       headers: dict | None = None, label: str | None = LABEL) -> Request:
    _, path, _ = ENDPOINTS[endpoint]
    if endpoint == "add" and label is not None:
        parts = [*parts, Part("label", label.encode(), filename=None, content_type=None)]
    body, content_type = multipart(parts)
    all_headers = {"Content-Type": content_type, **(_auth(token) if endpoint == "add" else {}), **(headers or {})}
    return Request(path + query, body, all_headers)


def _file_case(kind: str, data: bytes, ok: bool, *, filename: bytes = b"upload.img",
               content_type: str = "application/octet-stream") -> Case:
    """The file in the endpoint's own field: 200 (201 for add) if ``ok``, else 400."""
    def build(endpoint: str, token: str) -> Request:
        field = ENDPOINTS[endpoint][2]
        return _multipart_request(endpoint, token, [Part(field, data, filename, content_type)])

    expect = {e: (201 if e == "add" else 200) if ok else 400 for e in ALL_ENDPOINTS}
    return Case(kind, expect, build, "valid image" if ok else "upload")


def _raw_case(kind: str, data: bytes, content_type: str, expect: dict[str, int], category: str = "upload") -> Case:
    def build(endpoint: str, token: str) -> Request:
        headers = {"Content-Type": content_type, **(_auth(token) if endpoint == "add" else {})}
        return Request(ENDPOINTS[endpoint][1], data, headers)

    return Case(kind, expect, build, category)


def _chunked(data: bytes) -> bytes:
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def _chunked_case(kind: str, data: bytes | None, expect: dict[str, int], *, multipart_size: int = 0) -> Case:
    """A body sent with ``Transfer-Encoding: chunked`` (no Content-Length: the limit must hold anyway):
    raw ``data``, or a multipart body whose file part holds ``multipart_size`` bytes."""
    def build(endpoint: str, token: str) -> Request:
        if data is None:
            part_body, content_type = multipart([Part(ENDPOINTS[endpoint][2], b"\0" * multipart_size)])
        else:
            part_body, content_type = data, "application/octet-stream"
        headers = {"Content-Type": content_type, "Transfer-Encoding": "chunked",
                   **(_auth(token) if endpoint == "add" else {})}
        return Request(ENDPOINTS[endpoint][1], _chunked(part_body), headers)

    return Case(kind, expect, build)


def _parts_case(kind: str, make_parts: Callable[[str], list[Part]], expect: dict[str, int], *,
                query: str = "", label: str | None = LABEL, headers: dict | None = None,
                token_override: Callable[[str], str | None] | None = None, category: str = "upload") -> Case:
    def build(endpoint: str, token: str) -> Request:
        use_token = token_override(token) if token_override else token
        return _multipart_request(endpoint, use_token, make_parts(ENDPOINTS[endpoint][2]), query, headers, label)

    return Case(kind, expect, build, category)


def _same(status: int, endpoints: tuple[str, ...] = ALL_ENDPOINTS) -> dict[str, int]:
    return {e: status for e in endpoints}


def bad_cases(limits: Limits) -> list[Case]:
    """Every input that must be refused, with its status per endpoint."""
    good = corpus.png(1)
    jpeg, png = corpus.jpeg(2), corpus.png(3)
    refused = [
        _file_case("zero bytes", b"", ok=False),
        _file_case("truncated JPEG", corpus.truncated(jpeg), ok=False),
        _file_case("truncated PNG", corpus.truncated(png), ok=False),
        _file_case("PNG with a bad CRC", corpus.png_bad_crc(), ok=False),
        _file_case("PNG signature then garbage", corpus.png_magic_then_garbage(), ok=False),
        _file_case("random bytes", corpus.random_bytes(), ok=False),
        _file_case("text", corpus.TEXT, ok=False, filename=b"notes.txt", content_type="text/plain"),
        _file_case("HTML", corpus.HTML, ok=False, filename=b"page.html", content_type="text/html"),
        _file_case("PDF", corpus.PDF, ok=False, filename=b"doc.pdf", content_type="application/pdf"),
        _file_case("SVG", corpus.SVG, ok=False, filename=b"vector.svg", content_type="image/svg+xml"),
        _file_case("zip named .jpg", corpus.zip_archive(), ok=False, filename=b"photo.jpg",
                   content_type="image/jpeg"),
        _file_case("decompression bomb (30000x30000 PNG)", corpus.png_bomb(), ok=False, filename=b"bomb.png"),
        _file_case("non-UTF-8 file name (RFC 7578 asks for UTF-8)", corpus.png(5), ok=False,
                   filename=b"\xff\xfe\xe9t\xe9.png"),
        _file_case("GIF claiming a 65535x65535 canvas", corpus.gif_huge_screen(), ok=False),
        _raw_case("raw body: text sent as image/png", corpus.TEXT, "image/png",
                  {"search": 400, "classify": 400, "batch": 415, "add": 415}),
        _raw_case("JSON where multipart is expected", b'{"image": "aGVsbG8=", "label": "x"}', "application/json",
                  _same(415)),
        _raw_case("form-urlencoded body", b"image=abc&label=x", "application/x-www-form-urlencoded", _same(415)),
        _raw_case("multipart without a boundary", good, "multipart/form-data", _same(400)),
        _raw_case("malformed multipart", b"--xyz\r\nnot a part at all", "multipart/form-data; boundary=xyz",
                  _same(400)),
        _raw_case("body over the upload limit", b"\0" * (limits.max_upload_bytes + 1024),
                  "application/octet-stream", _same(413)),
        _raw_case("JSON body over the upload limit", b'{"a": "' + b"x" * limits.max_upload_bytes + b'"}',
                  "application/json", _same(413)),
        _chunked_case("chunked body over the upload limit", b"\0" * (limits.max_upload_bytes + 1024),
                      {"search": 413, "classify": 413, "batch": 415, "add": 415}),
        _chunked_case("chunked multipart over the upload limit", None, _same(413),
                      multipart_size=limits.max_upload_bytes + 1024),
        _chunked_case("chunked body: text", corpus.TEXT, {"search": 400, "classify": 400, "batch": 415, "add": 415}),
        _parts_case("multipart over the upload limit",
                    lambda f: [Part(f, b"\0" * (limits.max_upload_bytes + 1024))], _same(413)),
        _parts_case("form field over the form memory limit",
                    lambda f: [Part(f, good), Part("note", b"x" * 600_000, filename=None, content_type=None)],
                    _same(413)),
        _parts_case("more than 1000 multipart parts",
                    lambda f: [Part(f, good)] + [Part(f"f{i}", b"1", None, None) for i in range(1001)],
                    _same(413)),
        _parts_case("wrong field name", lambda f: [Part("file", good)], _same(400)),
        _parts_case("no file (label only)", lambda f: [], _same(400)),
        _parts_case("image sent as a text field", lambda f: [Part(f, good, filename=None, content_type=None)],
                    _same(400)),
        _parts_case("several files in one field", lambda f: [Part(f, good), Part(f, corpus.png(4))],
                    {"search": 400, "classify": 400, "batch": 200, "add": 400}),
        _parts_case("one good file and one empty file", lambda f: [Part(f, good), Part(f, b"")], _same(400)),
        _parts_case("more images than the batch limit",
                    lambda f: [Part(f, corpus.png(i)) for i in range(limits.max_batch + 1)], _same(400)),
    ]
    for value in ("0", "-1", "1000000000", "abc", "1.5", "", "%00", "1e3"):
        refused.append(_parts_case(f"k={value!r}", lambda f: [Part(f, good)], _same(400, READ_ENDPOINTS),
                                   query=f"?k={value}", category="parameter"))
    refused.append(_parts_case("weighted=maybe", lambda f: [Part(f, good)], _same(400, READ_ENDPOINTS),
                               query="?weighted=maybe", category="parameter"))
    refused.append(_parts_case("token in the query string", lambda f: [Part(f, good)], _same(401),
                               query="?token={token}", category="security"))
    refused.append(_parts_case("access_token in the query string", lambda f: [Part(f, good)], _same(401),
                               query="?access_token={token}", category="security"))
    # the write endpoint's own checks
    add_only = ("add",)
    refused += [
        _parts_case("add: empty label", lambda f: [Part(f, good)], _same(400, add_only), label="  "),
        _parts_case("add: label over 100 characters", lambda f: [Part(f, good)], _same(400, add_only),
                    label="x" * 101),
        _parts_case("add: label with control characters", lambda f: [Part(f, good)], _same(400, add_only),
                    label="cat\x00\x1b[31m"),
        _parts_case("add: no token", lambda f: [Part(f, good)], _same(401, add_only),
                    token_override=lambda t: None, category="security"),
        _parts_case("add: wrong token", lambda f: [Part(f, good)], _same(401, add_only),
                    token_override=lambda t: t[:-1] + ("x" if t[-1] != "x" else "y"), category="security"),
        _parts_case("add: basic auth instead of bearer", lambda f: [Part(f, good)], _same(401, add_only),
                    token_override=lambda t: None, headers={"Authorization": "Basic dXNlcjpwYXNz"},
                    category="security"),
    ]
    return refused


def valid_cases() -> list[Case]:
    """Odd but valid images: searched (200) and added (201) like any other."""
    return [
        _file_case("1x1 image", corpus.one_pixel(), ok=True),
        _file_case("1x10000 image", corpus.sliver(), ok=True),
        _file_case("16-bit grayscale PNG", corpus.png_16bit(), ok=True),
        _file_case("palette PNG with transparency", corpus.png_palette_transparent(), ok=True),
        _file_case("LA (gray + alpha) PNG", corpus.png_la(), ok=True),
        _file_case("RGBA PNG", corpus.png_rgba(), ok=True),
        _file_case("1-bit PNG", corpus.png_1bit(), ok=True),
        _file_case("CMYK JPEG", corpus.jpeg_cmyk(), ok=True),
        _file_case("grayscale JPEG", corpus.jpeg_grayscale(), ok=True),
        _file_case("EXIF-rotated JPEG", corpus.jpeg_exif_rotated(), ok=True),
        _file_case("progressive JPEG", corpus.jpeg_progressive(), ok=True),
        _file_case("animated GIF", corpus.gif_animated(), ok=True),
        _file_case("multi-frame TIFF", corpus.tiff_multiframe(), ok=True),
        _file_case("WebP", corpus.webp(), ok=True),
        _file_case("BMP", corpus.bmp(), ok=True),
        _file_case("4096-character file name", corpus.png(6), ok=True, filename=b"a" * 4092 + b".png"),
        _file_case("file name with a path", corpus.png(7), ok=True, filename=b"../../etc/passwd"),
    ]


BAD_IDS = ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "-1", "1e9", "%00", "1%00", "0x10", "1.0",
           "18446744073709551616", "9223372036854775807", "99999999")


TRAVERSAL_PATHS = ("/report/../../etc/passwd", "/report/..%2F..%2Fetc%2Fpasswd", "/report/%2e%2e/model.pt",
                   "/report/..%2Fmodel.pt", "/report/%2e%2e%2fmanifest.json", "/static/..%2F..%2Fapi%2Fconfig.py",
                   "/static/../../etc/passwd", "//etc/passwd", "/api/images/0/../../../etc/passwd")


def id_requests(token: str) -> Iterator[tuple[str, str, dict, int]]:
    """``(method, raw path, headers, expected status)`` for ids and paths that must not reach any file."""
    for raw in BAD_IDS:
        for template in ("/api/images/{}", "/api/images/{}?size=128", "/api/images/{}/info",
                         "/api/images/{}/similar"):
            yield "GET", template.format(raw), {}, 404
        yield "DELETE", f"/api/images/{raw}", _auth(token), 404
    for path in TRAVERSAL_PATHS:
        yield "GET", path, {}, 404


@dataclass
class SuiteResult:
    kinds: int = 0
    requests: int = 0
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)
    index_unchanged: bool = True
    added_and_found: int = 0

    def as_dict(self) -> dict:
        return {"kinds": self.kinds, "requests": self.requests, "server_errors": self.server_errors,
                "failures": self.failures, "index_unchanged": self.index_unchanged,
                "valid_added_and_found": self.added_and_found}


class _Checker:
    def __init__(self, base_url: str, token: str, result: SuiteResult, forbidden: tuple[bytes, ...]) -> None:
        self.base_url, self.token, self.result = base_url, token, result
        self.forbidden = (token.encode(), *forbidden)

    def send(self, method: str, path: str, body: bytes | None, headers: dict, expected: int, what: str) -> Answer:
        path = path.replace("{token}", self.token)
        answer = send(self.base_url, method, path, body, headers, timeout=120)
        self.result.requests += 1
        if answer.status >= 500 or answer.status == 0:
            self.result.server_errors += 1
        problems = []
        if answer.status != expected:
            problems.append(f"status {answer.status}, expected {expected} ({answer.body[:200]!r}{answer.error or ''})")
        if 400 <= answer.status < 500 and not answer.is_json_error:
            problems.append(f"not a JSON error: {answer.headers.get('content-type')} {answer.body[:120]!r}")
        if b"Traceback" in answer.body or b'File "/' in answer.body:
            problems.append("stack trace in the response")
        if any(secret in answer.body for secret in self.forbidden) or \
                any(self.token in v for v in answer.headers.values()):
            problems.append("a secret (the token or a file outside the index) is in the response")
        if problems:
            self.result.failures.append(f"{what}: " + "; ".join(problems))
        return answer

    def still_serving(self, what: str) -> None:
        health = send(self.base_url, "GET", "/api/health", timeout=30)
        self.result.requests += 1
        if health.status != 200:
            self.result.failures.append(f"after {what}: /api/health answered {health.status} {health.error or ''}")


def run_bad_inputs(base_url: str, index_dir: str, token: str, *, include_valid_adds: bool = True,
                   forbidden: tuple[bytes, ...] = (b"root:x:0:0",)) -> dict:
    """Run the whole suite against the server at ``base_url`` serving ``index_dir`` with write token ``token``.
    No response may contain the token or any of ``forbidden`` (contents of files outside the index).

    Returns a JSON-able summary: kinds tried, requests sent, server errors, failures (empty when all
    passed), whether the index stayed byte-for-byte unchanged, and how many valid odd images were added,
    found again by search and deleted.
    """
    result = SuiteResult()
    checker = _Checker(base_url, token, result, forbidden)
    stats = send(base_url, "GET", "/api/stats").json()
    limits = Limits(stats["limits"]["max_batch"], stats["limits"]["max_upload_bytes"])
    before = fingerprint(index_dir)

    bad, valid = bad_cases(limits), valid_cases()
    for case in bad:
        for endpoint, status in case.expect.items():
            request = case.build(endpoint, token)
            checker.send(ENDPOINTS[endpoint][0], request.path_and_query, request.body, request.headers, status,
                         f"{case.kind} -> {endpoint}")
            checker.still_serving(f"{case.kind} -> {endpoint}")
    ids = list(id_requests(token))
    for method, path, headers, status in ids:
        checker.send(method, path, None, headers, status, f"{method} {path}")
    for case in valid:
        for endpoint in READ_ENDPOINTS:
            request = case.build(endpoint, token)
            answer = checker.send("POST", request.path_and_query, request.body, request.headers,
                                  case.expect[endpoint], f"{case.kind} -> {endpoint}")
            if answer.status == 200 and endpoint != "batch" and endpoint != "classify":
                if not answer.json().get("neighbors"):
                    result.failures.append(f"{case.kind} -> {endpoint}: no neighbours")
    changes = differences(before, fingerprint(index_dir))
    if changes:
        result.index_unchanged = False
        result.failures.append("index directory changed by refused or read-only requests: " + ", ".join(changes))
    result.kinds = len({c.kind for c in bad}) + len({c.kind for c in valid}) + len(BAD_IDS) + len(TRAVERSAL_PATHS)
    if include_valid_adds:
        _add_valid_images(checker, valid)
    summary = result.as_dict()
    summary.update(bad_kinds=len(bad), valid_kinds=len(valid), id_kinds=len(BAD_IDS), traversal_paths=len(TRAVERSAL_PATHS))
    return summary


def _add_valid_images(checker: _Checker, valid: list[Case]) -> None:
    """Add every odd-but-valid image, find each again by searching with its own bytes, then delete it."""
    result, token = checker.result, checker.token
    for case in valid:
        request = case.build("add", token)
        answer = checker.send("POST", request.path_and_query, request.body, request.headers, 201,
                              f"{case.kind} -> add")
        if answer.status != 201:
            continue
        item_id = answer.json()["id"]
        search = case.build("search", token)
        found = checker.send("POST", search.path_and_query + "?k=20", search.body, search.headers, 200,
                             f"{case.kind}: search for the added image")
        hits = found.json().get("neighbors", []) if found.status == 200 else []
        if any(n["id"] == item_id and n["similarity"] > 0.999 for n in hits):
            result.added_and_found += 1
        else:
            result.failures.append(f"{case.kind}: added as {item_id} but not found by its own bytes")
        checker.send("DELETE", f"/api/images/{item_id}", None, _auth(token), 200, f"{case.kind}: delete")
        checker.send("GET", f"/api/images/{item_id}/info", None, {}, 404, f"{case.kind}: deleted id")

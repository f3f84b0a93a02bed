"""A raw HTTP client for the suites: bodies, paths and multipart parts are sent exactly as given (no URL
normalisation, no re-encoding of file names), which ``requests`` would not allow."""

from __future__ import annotations

import http.client
import json
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Part:
    """One multipart part: a form field (``filename=None``) or a file.  ``filename`` is raw bytes so that
    non-UTF-8 and very long names reach the server unchanged."""

    name: str
    data: bytes
    filename: bytes | None = b"upload"
    content_type: str | None = "application/octet-stream"


def multipart(parts: list[Part], boundary: str | None = None) -> tuple[bytes, str]:
    """``(body, content_type)`` of a multipart/form-data request holding ``parts`` in order."""
    boundary = boundary or "simsearch-" + os.urandom(12).hex()
    chunks: list[bytes] = []
    for part in parts:
        disposition = b'form-data; name="' + part.name.encode() + b'"'
        if part.filename is not None:
            disposition += b'; filename="' + part.filename + b'"'
        chunks.append(b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n")
        if part.content_type:
            chunks.append(b"Content-Type: " + part.content_type.encode() + b"\r\n")
        chunks.append(b"\r\n" + part.data + b"\r\n")
    chunks.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


@dataclass
class Answer:
    """A response, or ``status == 0`` with ``error`` set when the connection failed."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None

    def json(self):
        return json.loads(self.body)

    @property
    def is_json_error(self) -> bool:
        """True for a JSON object with a non-empty string ``error`` field and a JSON content type."""
        if not self.headers.get("content-type", "").startswith("application/json"):
            return False
        try:
            payload = self.json()
        except ValueError:
            return False
        return isinstance(payload, dict) and isinstance(payload.get("error"), str) and bool(payload["error"])


def send(base_url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 60.0) -> Answer:
    """Send one request with ``path`` (query string included) as is; never raises on network errors."""
    host_port = base_url.split("://", 1)[1].rstrip("/")
    host, _, port = host_port.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        headers = dict(headers or {})
        chunked = headers.get("Transfer-Encoding", "").lower() == "chunked"  # then body is already chunked
        all_headers = headers if chunked else {"Content-Length": str(len(body or b"")), **headers}
        for key, value in all_headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        sent_error = None
        if body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError) as exc:
                sent_error = exc  # the server may answer (e.g. 413) before reading the whole body
        try:
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Answer(0, error=f"{type(exc).__name__}: {exc}" + (f" (after {sent_error!r})" if sent_error else ""))
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(0, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()

"""The API's own exceptions (no Flask here) and the handlers that turn every error into JSON."""

from __future__ import annotations

import logging
import re
import uuid

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """Base class: ``status`` is the HTTP status the error handler answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ApiError, ValueError):
    """A parameter or field is missing or malformed (400)."""


class InvalidImage(ApiError, ValueError):
    """The upload is not an image we can decode (400)."""


class Unauthorized(ApiError):
    """The write endpoints need ``Authorization: Bearer <token>`` (401)."""

    status = 401


class WritesDisabled(ApiError):
    """No token is configured on the server, so writes are off (403)."""

    status = 403


class ItemNotFound(ApiError, LookupError):
    """No live item (or file) with that id (404)."""

    status = 404


class TooManyPixels(ApiError):
    """The images of one request hold more pixels than the request budget (413)."""

    status = 413


class UnsupportedMediaType(ApiError):
    """The request body has a content type we do not take (415)."""

    status = 415


# The answers to index faults: a fixed, true sentence each (the detail, with server paths, goes to the log only).
INDEX_FULL = "the index's disk is full: the write was not stored"
INDEX_READ_ONLY = "writes are disabled: the index folder is read-only"
INDEX_BUSY = "the index is busy (other writers held it past the timeout): nothing was stored, retry"
INDEX_UNAVAILABLE = "the index's server is unavailable: retry later"
INDEX_DAMAGED = "the index is damaged: the operator can run simsearch index check"
INDEX_UNUSABLE = "the index cannot be used at the moment: the server log has the detail"
RETRY_AFTER_S = "5"
REQUEST_ID_HEADER = "X-Request-Id"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-Id`` when it is sane (1-64 of ``A-Za-z0-9._:-``), else a new random one."""
    if header and _CLIENT_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def index_error_answer(exc: Exception) -> tuple[int, str, dict]:
    """``(status, public message, headers)`` for an index error (most specific class first)."""
    from index import (IndexBusyError, IndexDamagedError, IndexFullError, IndexReadOnlyError,
                       IndexUnavailableError)

    if isinstance(exc, IndexFullError):
        return 507, INDEX_FULL, {}
    if isinstance(exc, IndexReadOnlyError):
        return 503, INDEX_READ_ONLY, {}
    if isinstance(exc, IndexBusyError):
        return 503, INDEX_BUSY, {"Retry-After": RETRY_AFTER_S}
    if isinstance(exc, IndexUnavailableError):
        return 503, INDEX_UNAVAILABLE, {"Retry-After": RETRY_AFTER_S}
    if isinstance(exc, IndexDamagedError):
        return 503, INDEX_DAMAGED, {}
    return 503, INDEX_UNUSABLE, {}


def register_error_handlers(app) -> None:
    """JSON ``{"error": ..., "request_id": ...}`` for our errors, every HTTP error, the index's faults and
    (status 500) anything else.  Messages are ours and name only what the client sent; the detail of a
    server-side fault (paths, SQL, the exception) goes to the log under the same request id."""
    from flask import g, jsonify, request
    from werkzeug.exceptions import HTTPException

    from index import IndexStoreError

    def answer(status: int, message: str, headers: dict | None = None):
        rid = g.get("request_id") or request_id_from(request.headers.get(REQUEST_ID_HEADER))
        g.request_id = rid
        response = jsonify(error=message, request_id=rid)
        response.status_code = status
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    def where() -> str:
        return f"request {g.get('request_id', '-')} {request.method} {request.path}"

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        logger.info("%s: %d %s", where(), exc.status, exc.message)
        headers = {"WWW-Authenticate": 'Bearer realm="simsearch"'} if exc.status == 401 else None
        return answer(exc.status, exc.message, headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"request too large (limit {limit} bytes)" if limit else "request too large"
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return answer(exc.code or 500, message, headers)

    @app.errorhandler(IndexStoreError)
    def _index_error(exc: IndexStoreError):
        status, message, headers = index_error_answer(exc)
        logger.warning("%s: %d %s (%s: %s)", where(), status, message, type(exc).__name__, exc)
        return answer(status, message, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("%s: unhandled error", where())
        return answer(500, "internal server error")

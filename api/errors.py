"""The API's own exceptions (no Flask here) and the handlers that turn every error into JSON."""

from __future__ import annotations

import logging

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


class Busy(ApiError):
    """The index database stayed locked by other writers past the timeout, or its server (Milvus) is unreachable;
    nothing was written (503)."""

    status = 503


class UnsupportedMediaType(ApiError):
    """The request body has a content type we do not take (415)."""

    status = 415


def register_error_handlers(app) -> None:
    """JSON ``{"error": ...}`` for our errors, every HTTP error, and (logged, status 500) anything else."""
    from flask import jsonify
    from werkzeug.exceptions import HTTPException

    def answer(status: int, message: str, headers: dict | None = None):
        response = jsonify(error=message)
        response.status_code = status
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
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

    from index import IndexBusyError, IndexStoreError, IndexUnavailableError

    @app.errorhandler(IndexBusyError)
    def _busy(exc: IndexBusyError):  # any request that met the database locked past the timeout
        return answer(Busy.status, str(exc))

    @app.errorhandler(IndexUnavailableError)
    def _unavailable(exc: IndexUnavailableError):  # the index's server (Milvus) is down or timed out
        logger.warning("index unavailable: %s", exc)
        return answer(Busy.status, str(exc), {"Retry-After": "5"})

    @app.errorhandler(IndexStoreError)
    def _index_error(exc: IndexStoreError):  # e.g. the collection was dropped under a running server
        logger.error("index error: %s", exc)
        return answer(Busy.status, f"the index cannot be used: {exc}")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        logger.exception("unhandled error")
        return answer(500, "internal server error")

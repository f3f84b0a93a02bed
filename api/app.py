"""``create_app``: the Flask application factory."""

from __future__ import annotations

import logging
import time

from flask import Flask, Request, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.auth import check_query_has_no_token
from api.config import ApiConfig
from api.errors import REQUEST_ID_HEADER, register_error_handlers, request_id_from
from api.metrics import ApiMetrics
from api.service import SearchService
from api.views import STATIC_DIR, bp

logger = logging.getLogger(__name__)

PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class ApiRequest(Request):
    """Flask's request, except that a malformed multipart body raises ``ValueError`` (turned into a 400 by
    :mod:`api.params`) instead of silently parsing as an empty form, which would blame a "missing" field."""

    def make_form_data_parser(self):
        parser = super().make_form_data_parser()
        parser.silent = False
        return parser


def create_app(config: ApiConfig | dict | None = None, *, service: SearchService | None = None) -> Flask:
    """Build the app.  ``config``: an :class:`ApiConfig`, a dict of its fields, or None (``service``'s
    config, else :meth:`ApiConfig.from_env`).  ``service``: an already built :class:`SearchService`
    (tests share one); by default one is built from the config, loading the model and the index."""
    if isinstance(config, dict):
        config = ApiConfig(**config)
    if config is None:
        config = service.config if service is not None else ApiConfig.from_env()
    app = Flask(__name__, static_folder=STATIC_DIR, static_url_path="/static")
    app.request_class = ApiRequest
    app.config.update(MAX_CONTENT_LENGTH=config.max_upload_bytes, SIMSEARCH_CONFIG=config)
    app.json.sort_keys = False
    app.extensions["simsearch"] = service if service is not None else SearchService.from_config(config)
    app.extensions["simsearch_metrics"] = ApiMetrics()
    register_error_handlers(app)
    app.register_blueprint(bp)
    _register_hooks(app, config)
    logger.info("API ready: writes %s, max_k %d", "enabled" if config.writes_enabled else "disabled",
                config.max_k)
    return app


def _register_hooks(app: Flask, config: ApiConfig) -> None:
    metrics: ApiMetrics = app.extensions["simsearch_metrics"]

    @app.before_request
    def _start() -> None:
        g.simsearch_started = time.perf_counter()
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        check_query_has_no_token(request.args.keys())
        # the same 413 on every endpoint, whatever the content type, before anything reads the body
        # (bodies sent without a length are cut off at the limit by werkzeug while they are read)
        if request.content_length is not None and request.content_length > config.max_upload_bytes:
            raise RequestEntityTooLarge()

    @app.after_request
    def _finish(response):
        started = g.get("simsearch_started")
        if started is not None:
            endpoint = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            metrics.observe_request(endpoint, request.method, response.status_code, time.perf_counter() - started)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or request_id_from(None)
        if request.endpoint == "api.page":
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        origin = request.headers.get("Origin")
        if origin and origin in config.cors_origins:  # CORS is off unless origins are configured
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = REQUEST_ID_HEADER
            response.headers.add("Vary", "Origin")
        return response

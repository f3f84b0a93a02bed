"""The HTTP endpoints: parse the request, call :class:`SearchService`, format the answer. No logic here."""

from __future__ import annotations

import json
import os
import time
from functools import wraps

from flask import Blueprint, Response, current_app, request, send_file, send_from_directory

from api.auth import check_bearer
from api.errors import ItemNotFound
from api.openapi import openapi_spec
from api.params import (form_label, get_bool, get_choice, get_exact_choice, get_k, get_label_filter, many_uploads,
                        positive_int, single_upload)
from api.schemas import added_json, item_json, prediction_json, search_json
from api.service import THUMBNAIL_FORMATS, SearchService
from engine.ingestion import DEFAULT_POLICY, DUPLICATE_POLICIES
from engine.layout import REPORT_DIR, REPORT_HTML

bp = Blueprint("api", __name__)
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# images and thumbnails: any cache revalidates (ETag, If-None-Match -> 304) before reuse, so a deleted item's
# image is answered 404 at once, and only the client's own cache keeps a copy
IMAGE_CACHE_CONTROL = "private, no-cache"


def service() -> SearchService:
    return current_app.extensions["simsearch"]


def json_response(payload: dict, status: int = 200, timings_ms: dict | None = None) -> Response:
    """JSON with a ``Server-Timing`` header giving the steps' times and the encoding time."""
    started = time.perf_counter()
    body = json.dumps(payload, separators=(",", ":"))
    response = current_app.response_class(body + "\n", status=status, mimetype="application/json")
    if timings_ms is not None:
        parts = [f"{name};dur={value}" for name, value in timings_ms.items()]
        parts.append(f"encode;dur={round((time.perf_counter() - started) * 1000.0, 3)}")
        response.headers["Server-Timing"] = ", ".join(parts)
    return response


def requires_token(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        check_bearer(request.headers.get("Authorization"), service().config.api_token)
        return view(*args, **kwargs)

    return wrapper


def _search_one(results_key: str | None = None):
    svc = service()
    k, weighted = get_k(request.args, svc.config), get_bool(request.args, "weighted")
    result = svc.search([single_upload(request)], k=k, weighted=weighted, label=get_label_filter(request.args))[0]
    current_app.extensions["simsearch_metrics"].observe_stages(result.timings_ms)
    return result, k


# ---------------------------------------------------------------------- page
@bp.get("/")
def page():
    return send_from_directory(STATIC_DIR, "index.html", max_age=0)


@bp.get("/report")
def report():
    return _report_file(REPORT_HTML)


@bp.get("/report/<path:name>")
def report_asset(name: str):
    return _report_file(name)


def _report_file(name: str):
    folder = os.path.join(service().engine.directory, REPORT_DIR)
    if not os.path.isfile(os.path.join(folder, REPORT_HTML)):
        raise ItemNotFound("no report yet: generate one with simsearch report --index INDEX")
    return send_from_directory(folder, name, max_age=0)  # send_from_directory refuses paths outside folder


@bp.get("/openapi.json")
def openapi():
    return json_response(openapi_spec(service().config))


@bp.get("/metrics")
def metrics():
    ext = current_app.extensions["simsearch_metrics"]
    return Response(ext.render(), mimetype=None, content_type=ext.content_type)


# ---------------------------------------------------------------------- info
@bp.get("/api/health")
def health():
    return json_response(service().health())


@bp.get("/api/stats")
def stats():
    return json_response(service().stats())


# ---------------------------------------------------------------------- search
@bp.post("/api/search")
def search():
    result, k = _search_one()
    payload = search_json(result, k, request.script_root)
    payload["timings_ms"] = result.timings_ms
    return json_response(payload, timings_ms=result.timings_ms)


@bp.post("/api/classify")
def classify():
    result, k = _search_one()
    payload = {"k": k, "prediction": prediction_json(result.vote, result.weighted),
               "timings_ms": result.timings_ms}
    return json_response(payload, timings_ms=result.timings_ms)


@bp.post("/api/search/batch")
def search_batch():
    svc = service()
    k, weighted = get_k(request.args, svc.config), get_bool(request.args, "weighted")
    results = svc.search(many_uploads(request, svc.config), k=k, weighted=weighted,
                         label=get_label_filter(request.args))
    timings = results[0].timings_ms
    payload = {"k": k, "results": [search_json(r, k, request.script_root) for r in results],
               "timings_ms": timings}
    return json_response(payload, timings_ms=timings)


# ---------------------------------------------------------------------- items
@bp.get("/api/images/random")
def random_images():
    svc = service()
    n = positive_int(request.args, "n", default=1, maximum=svc.config.max_random)
    return json_response({"items": [item_json(m, request.script_root) for m in svc.random_items(n)]})


@bp.get("/api/images/<int:item_id>")
def image(item_id: int):
    svc = service()
    fmt = get_choice(request.args, "format", tuple(THUMBNAIL_FORMATS), "jpeg")  # checked even when unused
    if "size" in request.args:
        size = positive_int(request.args, "size", default=0, maximum=10_000)
        svc.check_thumbnail(size, fmt)
        etag = svc.image_etag(item_id, f"{size}.{fmt}")
        if request.if_none_match.contains(etag):  # the client's copy is current: no thumbnail to make
            response = current_app.response_class(status=304)
            del response.headers["Content-Type"]
        else:
            data = svc.thumbnail(item_id, size, fmt)
            response = current_app.response_class(data, mimetype=THUMBNAIL_FORMATS[fmt])
    else:
        path, mime = svc.image_file(item_id)
        etag = svc.image_etag(item_id)
        # answers 304 to a matching If-None-Match (and serves Range requests)
        response = send_file(path, mimetype=mime or "application/octet-stream", etag=etag)
    response.set_etag(etag)
    response.headers["Cache-Control"] = IMAGE_CACHE_CONTROL
    return response


@bp.get("/api/images/<int:item_id>/info")
def image_info(item_id: int):
    return json_response(item_json(service().item(item_id), request.script_root))


@bp.get("/api/images/<int:item_id>/similar")
def similar(item_id: int):
    svc = service()
    k, weighted = get_k(request.args, svc.config), get_bool(request.args, "weighted")
    item, result = svc.similar(item_id, k=k, weighted=weighted, label=get_label_filter(request.args))
    payload = {"query": item_json(item, request.script_root), **search_json(result, k, request.script_root),
               "timings_ms": result.timings_ms}
    return json_response(payload, timings_ms=result.timings_ms)


@bp.post("/api/images")
@requires_token
def add_image():
    svc = service()
    duplicates = get_exact_choice(request.args, "duplicates", DUPLICATE_POLICIES, DEFAULT_POLICY)
    label = form_label(request)
    result = svc.add_image(single_upload(request), label, duplicates=duplicates)
    if result.skipped:  # nothing stored: the answer is the existing item
        return json_response(added_json(result, request.script_root))
    response = json_response(added_json(result, request.script_root), status=201)
    response.headers["Location"] = f"{request.script_root}/api/images/{result.item.id}/info"
    return response


@bp.delete("/api/images/<int:item_id>")
@requires_token
def delete_image(item_id: int):
    service().delete(item_id)
    return json_response({"deleted": item_id})

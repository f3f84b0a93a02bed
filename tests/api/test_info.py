"""Health, stats, metrics, the OpenAPI document, the page, and the JSON error contract."""

from __future__ import annotations

import re

import pytest

from api import create_app


def test_health_and_stats(client, fmnist_folder):
    health = client.get("/api/health").get_json()
    assert health["status"] == "ok" and health["compaction_due"] is False
    stats = client.get("/api/stats").get_json()
    assert stats["items"] == 600 and set(stats["label_counts"]) == set(fmnist_folder.class_names)
    assert all(v == 60 for v in stats["label_counts"].values())
    assert stats["model"]["embedding_dim"] == stats["index"]["dim"]
    assert stats["model"]["class_names"] == fmnist_folder.class_names
    assert stats["index"]["index_type"] == "flat" and stats["writes_enabled"] is False
    if stats["index"]["backend"] == "faiss-sqlite":  # what the layout trades for its size, and the measured recall
        assert stats["index"]["index_params"] == {} and stats["index"]["bytes_per_vector"] > 4 * stats["index"]["dim"]
        assert stats["index"]["expected_recall"]["recall_at_10"] == 1.0


def test_metrics_count_requests_by_endpoint_and_status(client, png_bytes):
    client.post("/api/search", data=png_bytes, content_type="image/png")
    client.post("/api/search?k=0", data=png_bytes, content_type="image/png")
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'simsearch_http_requests_total\{endpoint="/api/search",method="POST",status="200"\} 1\.0', text)
    assert re.search(r'simsearch_http_requests_total\{endpoint="/api/search",method="POST",status="400"\} 1\.0', text)
    assert 'simsearch_http_request_duration_seconds_bucket{endpoint="/api/search"' in text
    assert 'simsearch_search_stage_seconds_count{stage="embed"} 1.0' in text


def test_openapi_describes_every_route(app, client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/report/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
    assert "Error" in spec["components"]["schemas"]


def test_page_and_static_files(client):
    with client.get("/") as r:
        assert r.status_code == 200 and b'id="drop"' in r.data
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    for name in ("app.js", "style.css"):
        with client.get(f"/static/{name}") as r:
            assert r.status_code == 200


@pytest.mark.parametrize("method, path, status", [("get", "/nope", 404), ("put", "/api/search", 405),
                                                  ("get", "/api/search", 405), ("delete", "/api/stats", 405)])
def test_http_errors_are_json(client, method, path, status):
    r = getattr(client, method)(path)
    assert r.status_code == status and r.is_json and r.get_json()["error"]


def test_cors_off_by_default(client):
    r = client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_unexpected_error_is_json_500_without_traceback(shared_service, caplog):
    app = create_app(service=shared_service)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    r = app.test_client().get("/boom")
    assert r.status_code == 500 and r.get_json() == {"error": "internal server error",
                                                     "request_id": r.headers["X-Request-Id"]}
    assert "RuntimeError" in caplog.text

"""Security on real servers: bearer tokens only in the header, never logged or echoed; writes off without
a token; CORS off by default; unexpected errors answer JSON without a stack trace."""

from __future__ import annotations

import requests

from api import ApiConfig, SearchService, create_app
from bench.reliability import corpus
from bench.reliability.snapshot import fingerprint


def _add(url: str, headers: dict | None = None, query: str = "") -> requests.Response:
    return requests.post(f"{url}/api/images{query}", files={"image": ("a.png", corpus.png(11), "image/png")},
                         data={"label": "sec"}, headers=headers or {}, timeout=60)


def test_writes_need_the_token_in_the_authorization_header(start_server, index_copy, token):
    server = start_server(log_level="debug")
    before = fingerprint(index_copy)
    refused = {
        "no token": _add(server.url),
        "wrong token": _add(server.url, {"Authorization": f"Bearer {token}x"}),
        "token prefix": _add(server.url, {"Authorization": f"Bearer {token[:-1]}"}),
        "basic auth": _add(server.url, {"Authorization": f"Basic {token}"}),
        "token in query": _add(server.url, query=f"?token={token}"),
        "token in query and header": _add(server.url, {"Authorization": f"Bearer {token}"}, f"?access_token={token}"),
        "delete without token": requests.delete(f"{server.url}/api/images/0", timeout=60),
        "delete, token in query": requests.delete(f"{server.url}/api/images/0?token={token}", timeout=60),
    }
    for what, r in refused.items():
        assert r.status_code == 401, what
        assert r.headers["Content-Type"].startswith("application/json") and r.json()["error"], what
        assert token not in r.text and token not in str(r.headers), what
    assert refused["no token"].headers["WWW-Authenticate"].startswith("Bearer")
    assert fingerprint(index_copy) == before  # nothing was written

    ok = _add(server.url, {"Authorization": f"Bearer {token}"})
    assert ok.status_code == 201 and token not in ok.text
    log = server.log()
    assert f"added image {ok.json()['id']}" in log  # the log is live at debug level...
    assert token not in log  # ...and holds no token


def test_writes_are_disabled_without_a_configured_token(start_server, index_copy, token):
    server = start_server(token=None)
    assert _add(server.url, {"Authorization": f"Bearer {token}"}).status_code == 403
    assert requests.delete(f"{server.url}/api/images/0", headers={"Authorization": f"Bearer {token}"},
                           timeout=60).status_code == 403
    assert requests.get(f"{server.url}/api/images/0/info", timeout=60).status_code == 200


def test_dev_server_request_log_redacts_a_token_in_the_url(start_server, token):
    """Flask's development server logs each request line with its query string."""
    server = start_server(dev=True, log_level="info")
    for path in (f"/api/health?token={token}", f"/api/stats?api_key={token}&x=1"):
        assert requests.get(server.url + path, timeout=60).status_code == 401
    requests.get(server.url + "/api/health", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    log = server.log()
    assert "/api/health?token=[redacted]" in log  # the request was logged, without the token
    assert token not in log


def test_cors_is_off_by_default(start_server):
    server = start_server()
    for method in ("GET", "OPTIONS"):
        r = requests.request(method, f"{server.url}/api/stats", timeout=60,
                             headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert not any(h.lower().startswith("access-control-") for h in r.headers), method
        assert r.headers.get("X-Content-Type-Options") == "nosniff"


def test_cors_allows_only_configured_origins(built_index):
    service = SearchService.from_config(ApiConfig(index=built_index, cors_origins=("https://ok.example",)))
    try:
        client = create_app(service=service).test_client()
        allowed = client.get("/api/stats", headers={"Origin": "https://ok.example"})
        denied = client.get("/api/stats", headers={"Origin": "https://evil.example"})
        assert allowed.headers["Access-Control-Allow-Origin"] == "https://ok.example"
        assert "Access-Control-Allow-Origin" not in denied.headers
    finally:
        service.close()


def test_unexpected_error_is_a_json_500_without_details(built_index, monkeypatch, caplog):
    service = SearchService.from_config(ApiConfig(index=built_index))
    try:
        def broken() -> dict:
            raise RuntimeError("secret detail at /srv/private/path")

        monkeypatch.setattr(service, "stats", broken)
        r = create_app(service=service).test_client().get("/api/stats")
        body = r.get_json()
        assert r.status_code == 500 and body == {"error": "internal server error", "request_id": body["request_id"]}
        assert b"Traceback" not in r.data and b"secret detail" not in r.data
        assert body["request_id"] == r.headers["X-Request-Id"] and body["request_id"] in caplog.text
        assert "secret detail" in caplog.text  # logged for the operator, not sent to the client
    finally:
        service.close()

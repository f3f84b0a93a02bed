"""Fixtures of the reliability suites: real gunicorn servers (own process group, always stopped) over a
private copy of the test index."""

from __future__ import annotations

import pytest

from bench.reliability.server import ServerProcess

TOKEN = "reliability-token-5f2c9a71"


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def start_server(index_copy, tmp_path):
    """``start(**options)`` -> a started :class:`ServerProcess` over ``index_copy``; all stopped at the end."""
    servers: list[ServerProcess] = []

    def start(index_dir: str = index_copy, **options) -> ServerProcess:
        options.setdefault("token", TOKEN)
        options.setdefault("log_path", str(tmp_path / f"server-{len(servers)}.log"))
        server = ServerProcess(index_dir, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop(timeout=5)

"""API fixtures: one read-only service over ``built_index`` shared by the session, and writable apps over a
per-test copy of the index (real model, real FAISS, real files)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from api import ApiConfig, SearchService, create_app

from apitest_helpers import TOKEN


@pytest.fixture(scope="session")
def shared_service(built_index):
    service = SearchService.from_config(ApiConfig(index=built_index, random_seed=0))
    yield service
    service.close()


@pytest.fixture
def app(shared_service):
    return create_app(service=shared_service)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_writable_app(index_copy):
    """``make(token=TOKEN)`` -> an app over this test's private index copy; services closed at the end."""
    services: list[SearchService] = []

    def make(token: str | None = TOKEN, **changes):
        service = SearchService.from_config(ApiConfig(index=index_copy, api_token=token, **changes))
        services.append(service)
        return create_app(service=service)

    yield make
    for service in services:
        service.close()


@pytest.fixture
def png_bytes(sample_png) -> bytes:
    return sample_png.read_bytes()

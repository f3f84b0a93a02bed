"""Connecting to Milvus: the optional ``pymilvus`` import, the token, CA bundle and timeout from the
environment (never from a location string, a log line or ``stats()``)."""

from __future__ import annotations

import logging
import os
import time

from index.errors import IndexUnavailableError
from index.location import TOKEN_ENV, MilvusLocation
from index.milvus.errors import MilvusMissing, translate

logger = logging.getLogger(__name__)

CA_ENV = "SIMSEARCH_MILVUS_CA"
TIMEOUT_ENV = "SIMSEARCH_MILVUS_TIMEOUT_S"


def import_pymilvus():
    try:
        import pymilvus
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise MilvusMissing("the Milvus back end needs pymilvus: pip install -r requirements-milvus.txt") from None
    return pymilvus


def timeout_s() -> float:
    """The per-call timeout in seconds: ``$SIMSEARCH_MILVUS_TIMEOUT_S``, default 10."""
    try:
        return max(float(os.environ.get(TIMEOUT_ENV, "10")), 0.1)
    except ValueError:
        return 10.0


def connect(location: MilvusLocation):
    """A ``MilvusClient`` for ``location`` (the token and CA bundle from the environment)."""
    pymilvus = import_pymilvus()
    # Milvus Lite answers no MVCC timestamp to iterators (pymilvus warns on every one and falls back to a
    # client-side timestamp, which is right for it) and, in process, logs an unimplemented-method
    # traceback at connect; neither is a problem of ours
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    # while the server is down pymilvus logs each failed reconnect with a full traceback; our error
    # handling reports the outage once per failed call, in one line (IndexUnavailableError)
    logging.getLogger("pymilvus.client.connection_manager").setLevel(logging.CRITICAL)
    logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)
    if location.lite:
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    # No keepalive pings on an idle channel: pymilvus pings every 10 s even without calls, and a gRPC
    # server with default settings (Milvus Lite's) answers an idle client's pings with GOAWAY
    # "too_many_pings", which kills the transport under every channel to that address in this process
    # (seen in CI: a connect minutes after the last call failed).  Pings during calls stay on.
    # dedicated: a channel of this store's own, not pymilvus's per-address shared one.
    kwargs = {"timeout": timeout_s(), "dedicated": True,
              "grpc_options": {"grpc.keepalive_permit_without_calls": 0}}
    token = os.environ.get(TOKEN_ENV)
    if token:
        kwargs["token"] = token
    ca = os.environ.get(CA_ENV)
    if ca and location.uri.startswith("https://"):
        kwargs["server_pem_path"] = ca
    for attempt in range(3):  # a transport the server just closed (GOAWAY) fails the first try only
        try:
            return pymilvus.MilvusClient(uri=location.uri, **kwargs)
        except Exception as exc:  # noqa: BLE001 - pymilvus raises several types; all mean "cannot use it"
            error = translate(exc, location, "connect")
            if not isinstance(error, IndexUnavailableError) or attempt == 2:
                raise error from None
            logger.warning("connecting to %s failed, retrying: %s", location.display, error)
            time.sleep(1.0)
    raise AssertionError("unreachable")

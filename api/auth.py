"""Bearer-token check for the write endpoints (pure: header and configured token in, exception out)."""

from __future__ import annotations

import hmac

from api.errors import InvalidRequest, Unauthorized, WritesDisabled

# query parameters that look like credentials: refused everywhere, since URLs end up in logs and histories
TOKEN_QUERY_PARAMS = frozenset({"token", "access_token", "api_token", "apikey", "api_key", "auth", "key"})


def check_query_has_no_token(param_names) -> None:
    leaked = sorted(TOKEN_QUERY_PARAMS.intersection(name.lower() for name in param_names))
    if leaked:
        raise InvalidRequest(f"credentials are accepted only in the Authorization header, never in the URL "
                             f"(remove query parameter {leaked[0]!r})")


def check_bearer(authorization: str | None, expected_token: str | None) -> None:
    """Raise :class:`WritesDisabled` if no token is configured, :class:`Unauthorized` unless
    ``authorization`` is ``"Bearer <expected_token>"`` (compared in constant time)."""
    if not expected_token:
        raise WritesDisabled("writes are disabled on this server: no API token is configured "
                             "(start it with SIMSEARCH_API_TOKEN set)")
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("this endpoint needs an 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(given.strip().encode("utf-8"), expected_token.encode("utf-8")):
        raise Unauthorized("invalid API token")

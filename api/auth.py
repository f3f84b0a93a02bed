"""Bearer-token check for the write endpoints (pure: header and configured token in, exception out)."""

from __future__ import annotations

import hmac
import logging
import re

from api.config import TOKEN_ENV
from api.errors import Unauthorized, WritesDisabled

# query parameters that look like credentials: refused everywhere, since URLs end up in logs and histories
TOKEN_QUERY_PARAMS = frozenset({"token", "access_token", "api_token", "apikey", "api_key", "auth", "key"})


_CREDENTIAL_IN_URL = re.compile(r"([?&;](?:%s)=)[^&;\s\"']*" % "|".join(sorted(TOKEN_QUERY_PARAMS)), re.I)
_BEARER = re.compile(r"(Bearer\s+)[^\s\"',]+", re.I)


def redact_credentials(text: str) -> str:
    """``text`` with the values of credential-like query parameters and bearer tokens replaced."""
    return _BEARER.sub(r"\1[redacted]", _CREDENTIAL_IN_URL.sub(r"\1[redacted]", text))


class RedactCredentials(logging.Filter):
    """A logging filter that redacts credentials from every record, e.g. the request lines that Flask's
    development server logs (they include the query string a careless client put a token in)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_credentials(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def check_query_has_no_token(param_names) -> None:
    leaked = sorted(TOKEN_QUERY_PARAMS.intersection(name.lower() for name in param_names))
    if leaked:
        raise Unauthorized(f"credentials are accepted only in the Authorization header, never in the URL "
                           f"(remove query parameter {leaked[0]!r})")


def check_bearer(authorization: str | None, expected_token: str | None) -> None:
    """Raise :class:`WritesDisabled` if no token is configured, :class:`Unauthorized` unless
    ``authorization`` is ``"Bearer <expected_token>"`` (compared in constant time)."""
    if not expected_token:
        raise WritesDisabled("writes are disabled on this server: no API token is configured "
                             f"(start it with {TOKEN_ENV} set)")
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("this endpoint needs an 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(given.strip().encode("utf-8"), expected_token.encode("utf-8")):
        raise Unauthorized("invalid API token")

"""A request's rate-limit count, sent to Redis as the request arrives (SPEC §8).

The count is the one wait on the hot paths: a sync worker sits idle for the round trip.
When a request carries a credential this process has cached — an API key as a Bearer
token on ``/v1``, on the gateway check and on the introspection and revocation endpoints, a client's Basic
credentials on the token, introspection and revocation endpoints — its count is written
to Redis here and read where the request authenticates (``rate_limits.count``); meanwhile
Flask builds the request, routes it and runs its hooks. It is the count the authentication
would make, once per request. A request refused before it authenticates (an unknown
route, a body over the limit, a malformed OAuth request) counts against the credential it
carried all the same.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.oauth import clients
from app.oauth.client_auth import basic_credentials
from app.security.rate_limits import EARLY_COUNT, RateLimiter, Started
from app.services import api_keys
from app.services.freshness import Entry

EARLY_CREDENTIAL = "sensei.early_credential"  # the cache entry the early count was started for
CLIENT_PATHS = ("/oauth/token", "/oauth/introspect", "/oauth/revoke")
KEY_PATHS = ("/oauth/introspect", "/oauth/revoke")
GATEWAY_PATH = "/gateway/check"


class EarlyCount:
    """WSGI middleware: starts the count; a count nobody finished is read at the end."""

    def __init__(self, wsgi_app, limiter: RateLimiter) -> None:
        self.wsgi_app = wsgi_app
        self.limiter = limiter

    def __call__(self, environ, start_response):
        if not self._start(environ):
            return self.wsgi_app(environ, start_response)
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            unread = environ.pop(EARLY_COUNT, None)
            if isinstance(unread, Started):  # refused before authenticating: counted, and read
                self.limiter.finish(unread)

    def _start(self, environ) -> bool:
        """Start the count of a cached credential; the record's cache entry is left in the
        environ beside it (``EARLY_CREDENTIAL``) for the hot paths."""
        header = environ.get("HTTP_AUTHORIZATION")
        if not header:
            return False
        path = environ.get("PATH_INFO", "")
        scheme, _, credential = header.partition(" ")
        scheme = scheme.lower()
        entry: Entry[Any] | None
        if scheme == "bearer" and (path.startswith("/v1/") or path in KEY_PATHS or path == GATEWAY_PATH):
            entry = api_keys.cached_active_key(credential.strip())
        elif scheme == "basic" and path in CLIENT_PATHS:
            credentials = basic_credentials(header)
            entry = clients.cached_client(*credentials) if credentials else None
        else:
            return False
        if entry is None:
            return False
        record = entry.value
        started = self.limiter.start(record.bucket, record.quota, org_id=record.org_id)
        if started is None:
            return False
        environ[EARLY_COUNT], environ[EARLY_CREDENTIAL] = started, entry
        return True


def register_early_count(app: Flask) -> None:
    app.wsgi_app = EarlyCount(app.wsgi_app, app.extensions["sensei.limiter"])  # type: ignore[method-assign]

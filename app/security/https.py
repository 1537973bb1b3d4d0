"""HTTPS in production (SPEC §11).

With ``SENSEI_ENV=production`` a plain-HTTP request (directly, or as a trusted proxy's
``X-Forwarded-Proto: http`` says) is refused on the API and OAuth endpoints with
``403 https_required`` and redirected to https on pages; every response carries HSTS
(``app.security.headers``).
The scheme comes from ProxyFix, so only ``SENSEI_TRUSTED_PROXIES`` hops are believed.
Development serves plain HTTP.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from flask import Flask, redirect, request

from app.errors import ApiError


def register_https_enforcement(app: Flask) -> None:
    if not app.config["SETTINGS"].production:
        return
    # Pages are redirected to the issuer's host: the Host header is whatever the client (or a
    # proxy that does not pass it on) sent.
    issuer_host = urlsplit(app.config["SETTINGS"].ISSUER).netloc

    @app.before_request
    def require_https():
        if is_https(request.environ):
            return None
        path = request.path
        if path.startswith(("/v1", "/oauth/token", "/oauth/revoke", "/oauth/introspect", "/.well-known/")):
            raise ApiError("https_required", "HTTPS is required: send this request to the https:// address")
        url = urlsplit(request.url)
        return redirect(urlunsplit(("https", issuer_host, url.path, url.query, "")), code=308)


def is_https(environ) -> bool:
    """The request came over HTTPS (as the trusted proxies say, through ProxyFix)."""
    return environ.get("wsgi.url_scheme") == "https"

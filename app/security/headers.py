"""Response headers for every surface: framing, sniffing, referrer, CSP on pages (SPEC §5)."""

from __future__ import annotations

from flask import Flask

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# No form-action: browsers apply it to the redirect after the consent form, which goes
# to the client's own redirect URI.


COMMON = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"))
PAGE = (("Content-Security-Policy", PAGE_CSP), ("Cache-Control", "no-store"))
OTHER = (("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),)
_FOR_PAGES = tuple((name.lower(), name, value) for name, value in COMMON + PAGE)
_FOR_OTHERS = tuple((name.lower(), name, value) for name, value in COMMON + OTHER)


class SecurityHeaders:
    """WSGI middleware adding the headers a response does not set itself (one pass over the
    header list, on every response)."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        def add_headers(status, headers, exc_info=None):
            present = {name.lower(): value for name, value in headers}
            html = present.get("content-type", "").startswith("text/html")
            for lower, name, value in _FOR_PAGES if html else _FOR_OTHERS:
                if lower not in present:
                    headers.append((name, value))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, add_headers)


def register_security_headers(app: Flask) -> None:
    app.wsgi_app = SecurityHeaders(app.wsgi_app)  # type: ignore[method-assign]

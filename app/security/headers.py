"""Response headers for every surface: framing, sniffing, referrer, CSP on pages (SPEC §5)."""

from __future__ import annotations

from flask import Flask

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# No form-action: browsers apply it to the redirect after the consent form, which goes
# to the client's own redirect URI.


HSTS = "max-age=63072000; includeSubDomains"  # production only (SPEC §11)
COMMON = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"))
PAGE = (("Content-Security-Policy", PAGE_CSP), ("Cache-Control", "no-store"))
OTHER = (("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),)
_FOR_PAGES = tuple((name.lower(), name, value) for name, value in COMMON + PAGE)
_FOR_OTHERS = tuple((name.lower(), name, value) for name, value in COMMON + OTHER)


class SecurityHeaders:
    """WSGI middleware adding the headers a response does not set itself (one pass over the
    header list, on every response); with ``hsts`` (production), Strict-Transport-Security too."""

    def __init__(self, wsgi_app, *, hsts: bool = False) -> None:
        self.wsgi_app = wsgi_app
        extra = (("strict-transport-security", "Strict-Transport-Security", HSTS),) if hsts else ()
        self.for_pages, self.for_others = _FOR_PAGES + extra, _FOR_OTHERS + extra

    def __call__(self, environ, start_response):
        for_pages, for_others = self.for_pages, self.for_others

        def add_headers(status, headers, exc_info=None):
            present = {name.lower(): value for name, value in headers}
            html = present.get("content-type", "").startswith("text/html")
            for lower, name, value in for_pages if html else for_others:
                if lower not in present:
                    headers.append((name, value))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, add_headers)


def register_security_headers(app: Flask) -> None:
    app.wsgi_app = SecurityHeaders(app.wsgi_app, hsts=app.config["SETTINGS"].production)  # type: ignore[method-assign]

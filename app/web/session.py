"""The signed-in user of a browser, from the server-side session the cookie names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from flask import current_app, g, session
from flask.sessions import NullSession, SecureCookieSessionInterface

from app.models import User
from app.services import orgs as org_service

_NULL_SESSION = NullSession()

# Bearer-authenticated surfaces: no browser session is read or written there.
STATELESS_PATHS = ("/v1/", "/oauth/token", "/oauth/revoke", "/oauth/introspect", "/oauth/userinfo",
                   "/oauth/device_authorization", "/.well-known/", "/healthz", "/readyz", "/metrics", "/gateway/")


class PageSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened only where pages use it: an API call pays
    nothing for a cookie it never sends, and a cookie sent to the API is not even read."""

    def open_session(self, app, request):
        if request.path.startswith(STATELESS_PATHS):
            return None  # Flask substitutes its read-only null session
        return super().open_session(app, request)

    def make_null_session(self, app):
        return _NULL_SESSION  # read-only (every change raises), so one serves every request


@dataclass(frozen=True)
class SignIn:
    """When the browser's user signed in, and the session's public id (OpenID Connect's
    ``auth_time`` and ``sid``)."""

    auth_time: datetime
    sid: str


def current_user() -> User | None:
    if "user" not in g:
        found = org_service.signed_in(session.get("sid"))
        g.user = found[0] if found else None
        g.sign_in = SignIn(found[1].created_at, org_service.public_session_id(found[1])) if found else None
    return g.user


def current_sign_in() -> SignIn | None:
    current_user()
    return g.sign_in


def sign_in(user: User) -> None:
    """Start a new server-side session; the old cookie contents (and id) are discarded."""
    old = session.get("sid")
    if old:
        org_service.end_session(old)
    session.clear()
    session.permanent = True
    session["sid"] = org_service.start_session(
        user=user, ttl_seconds=current_app.config["SETTINGS"].SESSION_TTL
    )
    g.pop("user", None)  # read again (with its sign-in) when asked


def sign_out() -> None:
    org_service.end_session(session.get("sid"))
    session.clear()
    g.user, g.sign_in = None, None


def safe_next(target: str | None, default: str = "/") -> str:
    """Only our own absolute paths: no scheme, no host, no ``//`` or ``/\\`` tricks."""
    if not target or not isinstance(target, str) or len(target) > 4096:
        return default
    if not target.startswith("/") or target.startswith("//") or target.startswith("/\\"):
        return default
    if any(ord(c) < 0x20 for c in target) or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target

"""The hot paths (issue 8): the commonest calls answered below Flask.

``GET /v1/me``, ``GET /gateway/check`` and ``POST /oauth/introspect`` are what an API in
front of Sensei sends on every call of its own, and ``POST /oauth/token`` with client
credentials what every machine client sends. Flask's request machinery (the request and
URL adapter, the hooks, the view's response object) cost them more than their own work, so
``HotPaths``, a WSGI middleware inside the request edge, the security headers and the early
count, answers them itself when the request is the ordinary case:

* its credential is one this process has cached, the edge started its count
  (``app.early_count``) and the generation that count read confirms the cache
  (``freshness.confirmed``): the rule that makes deletions and revocations effective at once;
* its address, rate limit and scopes let it through, and its parameters are plain;
* it is not debug mode and, in production, it came over HTTPS.

It then applies the same rules and makes the same answer and audit entry through the same
functions as the view. Every other request (no credential or an uncached one, a refusal, an
inactive token, a parameter out of the ordinary, an error) goes on to the view, which
answers it as before and uses the count already read (``rate_limits.Counted``): a request
is never counted twice. ``tests/test_hot_paths.py`` compares both ways' answers.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, NamedTuple

from flask import Flask

from app.api import me as me_view
from app.api.gateway import allowed as gateway_allowed
from app.api.gateway import scopes_well_formed
from app.early_count import EARLY_CREDENTIAL
from app.metrics import ROUTE
from app.oauth.clients import Client
from app.oauth.endpoints import (
    ApiKeyCaller,
    found_for,
    introspection_payload,
    is_active,
    record_introspection,
)
from app.oauth.server import client_token, record_client_token
from app.observability import principal_audit_context
from app.security import ip_rules, rate_limits
from app.security.https import is_https
from app.security.rate_limits import EARLY_COUNT, Counted, Started
from app.services import api_keys as key_service
from app.services import audit as audit_log
from app.services.api_keys import ActiveKey
from app.services.clients import ClientRecord
from app.services.freshness import Entry, confirmed

Answer = tuple[str, list[tuple[str, str]], bytes]
MAX_FORM_BYTES = 8192  # a hot request's body: a token and its hint
PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:")  # needs no decoding
API_JSON = [("Content-Type", "application/json")]
OAUTH_JSON = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache")]


class Prepared(NamedTuple):
    """A hot path's answer, made while the request's count is in flight, and what is to be
    recorded (the audit entry) once the count lets the answer go out."""

    answer: Answer
    record: Callable[[], None]


class HotPaths:
    def __init__(self, wsgi_app, app: Flask) -> None:
        self.wsgi_app = wsgi_app
        self.app = app
        self.limiter = app.extensions["sensei.limiter"]
        self.https_only = app.config["SETTINGS"].production
        self.routes: dict[tuple[str, str], tuple[str, Callable[..., Prepared | None]]] = {
            ("GET", "/v1/me"): ("/v1/me", self.me),
            ("GET", "/gateway/check"): ("/gateway/check", self.gateway_check),
            ("POST", "/oauth/introspect"): ("/oauth/introspect", self.introspect),
            ("POST", "/oauth/token"): ("/oauth/token", self.token),
        }

    def __call__(self, environ, start_response):
        route = self.routes.get((environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")))
        started = environ.get(EARLY_COUNT)
        if (route is None or type(started) is not Started or (self.https_only and not is_https(environ))
                or self.app.json.indented):  # type: ignore[attr-defined]
            return self.wsgi_app(environ, start_response)
        rule, handler = route
        entry: Entry[Any] = environ[EARLY_CREDENTIAL]
        # The answer is made first, under the generation the cached record was stored with,
        # so that the count's round trip overlaps the work; nothing is recorded or sent
        # unless the count then confirms that generation and allows the request.
        try:
            prepared = handler(environ, entry)
        except Exception:  # the view meets it again and answers it in its surface's shape
            prepared = None
        hit = self.limiter.finish(started)
        environ[EARLY_COUNT] = Counted(started.bucket, started.org_id, hit)  # the view's, if it answers
        if prepared is None or not confirmed(entry, hit) or not hit.decision.allowed:
            return self.wsgi_app(environ, start_response)
        try:
            prepared.record()
        except Exception:  # not recorded (the database is down and the writer full): the view's
            return self.wsgi_app(environ, start_response)
        rate_limits.remember(hit, environ)
        environ[ROUTE] = rule
        status, headers, body = prepared.answer
        start_response(status, headers)
        return [body]

    # -- /v1 and the gateway: an API key ----------------------------------------------------

    def _key_principal(self, environ, record: Any):
        """The principal of a cached API key that may make this call now, or None. It comes
        with its organization and name: describing it reads nothing (no app context)."""
        if (not isinstance(record, ActiveKey) or not record.is_active() or key_service.last_use_due(record)
                or not ip_rules.allowed_by_all(record.principal.ip_whitelists, environ.get("REMOTE_ADDR"))
                or record.principal.org is None or not record.principal.name):
            return None
        return record.principal

    def _audited(self, environ, principal, action: str):
        context = principal_audit_context(principal, environ)
        return lambda: audit_log.record_now(context, app=self.app, org_id=principal.org_id, action=action)

    def me(self, environ, entry: Entry[Any]) -> Prepared | None:
        principal = self._key_principal(environ, entry.value)
        if principal is None:
            return None
        return Prepared(_ok(self._json(me_view.describe(principal)), API_JSON),
                        self._audited(environ, principal, "me.read"))

    def gateway_check(self, environ, entry: Entry[Any]) -> Prepared | None:
        principal = self._key_principal(environ, entry.value)
        wanted = _plain_values(environ.get("QUERY_STRING", ""), {"scope"}, repeat=True)
        if principal is None or wanted is None:
            return None
        scopes = wanted.get("scope", [])
        if not scopes_well_formed(scopes) or not all(principal.has_scope(scope) for scope in scopes):
            return None
        payload, _status, extra = gateway_allowed(principal)
        return Prepared(_ok(self._json(payload), API_JSON, extra.items()),
                        self._audited(environ, principal, "gateway.check"))

    # -- introspection: a client or an API key ----------------------------------------------

    def introspect(self, environ, entry: Entry[Any]) -> Prepared | None:
        if environ.get("QUERY_STRING"):
            return None
        with self.app.app_context():  # the token's verification reads the settings and the keys
            return self._introspect(environ, entry)

    def _introspect(self, environ, entry: Entry[Any]) -> Prepared | None:
        form = _read_form(environ, {"token", "token_type_hint"})
        if form is None or not form.get("token") or form["token"][0].startswith(("sk_", "rt_")):
            return None  # API keys and refresh tokens are looked up in the database: the view's
        record = entry.value
        if isinstance(record, ActiveKey):
            if self._key_principal(environ, record) is None:
                return None
            caller: Any = ApiKeyCaller(record)
        else:
            caller = record  # a confidential client whose secret matched (``clients.cached_client``)
        rate_limits.note_generation(caller.org_id, entry.generation)  # what the count must confirm
        found = found_for(form["token"][0], caller.org_id)
        if found is None or not is_active(found):
            return None
        payload = introspection_payload(found)
        return Prepared(_ok(self.app.json.dumps(payload).encode(), OAUTH_JSON),
                        lambda: record_introspection(caller, payload, environ, app=self.app))

    # -- client credentials -----------------------------------------------------------------

    def token(self, environ, entry: Entry[Any]) -> Prepared | None:
        record = entry.value
        if environ.get("QUERY_STRING") or not isinstance(record, ClientRecord):
            return None
        form = _read_form(environ, {"grant_type", "scope"})
        if form is None or form.get("grant_type") != ["client_credentials"]:
            return None
        client = Client(record)
        with self.app.app_context():  # signing reads the settings and the key
            made = client_token(client, form.get("scope", [None])[0], environ.get("REMOTE_ADDR"))
        if made is None:
            return None
        token, issued = made
        return Prepared(_ok(self.app.json.dumps(token).encode(), OAUTH_JSON),
                        lambda: record_client_token(client, issued, environ, app=self.app))

    def _json(self, obj: Any) -> bytes:
        return self.app.json.response_body(obj)  # type: ignore[attr-defined]


def _ok(body: bytes, headers: list[tuple[str, str]], after=()) -> Answer:
    """A 200 with the headers in the order the view's response has them."""
    return "200 OK", [*headers, ("Content-Length", str(len(body))), *after], body


def _read_form(environ, names: set[str]) -> dict[str, list[str]] | None:
    """A small urlencoded body of plain values, each name once; None for anything else. The
    body stays readable for the view."""
    content_type = environ.get("CONTENT_TYPE", "")
    length = environ.get("CONTENT_LENGTH", "")
    if content_type not in ("", "application/x-www-form-urlencoded") or not length.isdigit():
        return None
    size = int(length)
    if size > MAX_FORM_BYTES:
        return None
    raw = environ["wsgi.input"].read(size)
    environ["wsgi.input"] = io.BytesIO(raw)
    if len(raw) != size or not raw.isascii():
        return None
    return _plain_values(raw.decode("ascii"), names, repeat=False)


def _plain_values(encoded: str, names: set[str], *, repeat: bool) -> dict[str, list[str]] | None:
    """``name=value&...`` with known names and values that need no decoding, or None."""
    values: dict[str, list[str]] = {}
    if not encoded:
        return values
    for pair in encoded.split("&"):
        name, sep, value = pair.partition("=")
        if not sep or name not in names or (name in values and not repeat) or not PLAIN.issuperset(value):
            return None
        values.setdefault(name, []).append(value)
    return values


def register_hot_paths(app: Flask) -> None:
    """Innermost of the WSGI middlewares: registered before the others."""
    app.wsgi_app = HotPaths(app.wsgi_app, app)  # type: ignore[method-assign]

"""Protect your own Flask service with Sensei Auth's API keys and access tokens.

```python
from flask import Flask, g
from sensei.resource import require_scopes

app = Flask(__name__)
app.config["SENSEI_ISSUER"] = "https://auth.example.com"

@app.get("/v1/migrations")
@require_scopes("migrations:read")
def migrations():
    return {"org": g.sensei_principal.org_id, "data": []}
```

Access tokens (JWTs) are verified offline against the issuer's JWKS: ``alg`` pinned to
RS256, ``typ`` ``at+jwt``, ``iss``, ``aud`` (``SENSEI_AUDIENCE``, default the issuer) and
``exp`` checked; the JWKS is cached and fetched again for an unknown ``kid``, at most once
every ``JWKS_REFETCH_INTERVAL`` seconds. A JWT stays valid here until it expires: a
revocation reaches this service only through introspection (``SENSEI_INTROSPECT_TOKENS =
True`` introspects tokens too). API keys (``sk_live_``/``sk_test_``) are checked by
introspection authenticated with the key itself, each answer cached for
``SENSEI_CACHE_SECONDS`` (default 5). Refusals are the /v1 error envelope: 401, 403 naming
the scope, 429 passed on from Sensei, 503 when Sensei cannot be reached.

Needs ``pip install 'sensei-sdk[resource]'`` (Flask and PyJWT).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from flask import Flask, current_app, g, jsonify, request

from sensei._http import USER_AGENT

JWKS_REFETCH_INTERVAL = 5.0
CACHE_SECONDS = 5.0
CACHE_ENTRIES = 10_000
DEFAULT_DOCS_URL = "https://docs.sensei.ai"


@dataclass(frozen=True)
class Principal:
    """Who called: ``g.sensei_principal`` in a protected view."""

    org_id: str
    type: str  # "api_key" or "access_token"
    id: str  # the key's id, or the token's subject (a user or a client)
    scopes: frozenset[str]
    client_id: str | None = None
    claims: dict[str, Any] = field(default_factory=dict, repr=False)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def grants(held: frozenset[str], scope: str) -> bool:
    """Whether ``held`` covers ``scope``, wildcards included (``*``, ``migrations:*``, ``*:read``)."""
    resource, _, action = scope.partition(":")
    return bool({scope, "*", f"{resource}:*", f"*:{action}"} & held)


class Verifier:
    """The checks for one issuer, with their caches (thread-safe)."""

    def __init__(self, issuer: str, *, audience: str | None = None, introspect_tokens: bool = False,
                 cache_seconds: float = CACHE_SECONDS, http_client: httpx.Client | None = None) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience or self.issuer
        self.introspect_tokens = introspect_tokens
        self.cache_seconds = cache_seconds
        self.http = http_client or httpx.Client(timeout=5.0, headers={"User-Agent": USER_AGENT})
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._answers: OrderedDict[str, tuple[float, Principal | Refused]] = OrderedDict()

    def principal(self, credential: str) -> Principal:
        if credential.startswith("sk_") or self.introspect_tokens:
            return self._introspected(credential)
        return self._verified(credential)

    # -- access tokens, offline ------------------------------------------------------------

    def _verified(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Refused(401, "unauthorized", "Malformed access token") from None
        if header.get("alg") != "RS256" or str(header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
            raise Refused(401, "unauthorized", "Not an access token of this issuer")
        key = self._key(str(header.get("kid", "")))
        try:
            claims = jwt.decode(token, key, algorithms=["RS256"], audience=self.audience, issuer=self.issuer,
                                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Refused(401, "unauthorized", "Expired access token") from None
        except jwt.PyJWTError:
            raise Refused(401, "unauthorized", "Invalid access token") from None
        return Principal(org_id=str(claims.get("org", "")), type="access_token", id=str(claims["sub"]),
                         scopes=frozenset(str(claims.get("scope", "")).split()),
                         client_id=claims.get("client_id"), claims=claims)

    def _key(self, kid: str) -> Any:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= JWKS_REFETCH_INTERVAL:
                self._fetched_at = time.monotonic()
                try:
                    answer = self.http.get(f"{self.issuer}/.well-known/jwks.json")
                    answer.raise_for_status()
                    keys = answer.json()["keys"]
                except (httpx.HTTPError, ValueError, KeyError) as error:
                    if not self._keys:
                        raise Refused(503, "service_unavailable",
                                      f"Cannot fetch the issuer's keys ({type(error).__name__})") from None
                else:
                    self._keys = {k["kid"]: jwt.PyJWK(k, algorithm="RS256").key for k in keys
                                  if k.get("kty") == "RSA" and "kid" in k}
            key = self._keys.get(kid)
        if key is None:
            raise Refused(401, "unauthorized", "Access token signed by an unknown key")
        return key

    # -- API keys, by introspection ----------------------------------------------------------

    def _introspected(self, credential: str) -> Principal:
        digest = hashlib.sha256(credential.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._answers.get(digest)
            if cached is not None and cached[0] > now:
                answer = cached[1]
                if isinstance(answer, Refused):
                    raise answer
                return answer
        outcome = self._introspect(credential)
        if not (isinstance(outcome, Refused) and outcome.status >= 429):  # never cache a passing failure
            with self._lock:
                self._answers[digest] = (now + self.cache_seconds, outcome)
                self._answers.move_to_end(digest)
                while len(self._answers) > CACHE_ENTRIES:
                    self._answers.popitem(last=False)
        if isinstance(outcome, Refused):
            raise outcome
        return outcome

    def _introspect(self, credential: str) -> Principal | Refused:
        try:
            answer = self.http.post(f"{self.issuer}/oauth/introspect", data={"token": credential},
                                    headers={"Authorization": f"Bearer {credential}"})
        except httpx.HTTPError as error:
            return Refused(503, "service_unavailable", f"Cannot reach the issuer ({type(error).__name__})")
        if answer.status_code == 429:
            retry = answer.headers.get("Retry-After", "1")
            return Refused(429, "rate_limited", "Rate limit exceeded for this credential", {"Retry-After": retry})
        if answer.status_code in (400, 401):
            return Refused(401, "unauthorized", "Invalid API key provided")
        if answer.status_code == 403:
            return Refused(403, "forbidden", "This credential may not be used from this address")
        if answer.status_code != 200:
            return Refused(503, "service_unavailable", f"The issuer answered {answer.status_code}")
        body = answer.json()
        if not body.get("active"):
            return Refused(401, "unauthorized", "Invalid, expired or revoked credential")
        return Principal(org_id=str(body.get("org", "")),
                         type="api_key" if body.get("token_type") == "api_key" else "access_token",
                         id=str(body.get("sub", "")), scopes=frozenset(str(body.get("scope", "")).split()),
                         client_id=body.get("client_id"), claims=body)


def _verifier(app: Flask) -> Verifier:
    verifier = app.extensions.get("sensei.verifier")
    if verifier is None:
        issuer = app.config.get("SENSEI_ISSUER")
        if not issuer:
            raise RuntimeError('require_scopes needs app.config["SENSEI_ISSUER"] (the Sensei Auth base URL)')
        verifier = app.extensions["sensei.verifier"] = Verifier(
            issuer, audience=app.config.get("SENSEI_AUDIENCE"),
            introspect_tokens=bool(app.config.get("SENSEI_INTROSPECT_TOKENS", False)),
            cache_seconds=float(app.config.get("SENSEI_CACHE_SECONDS", CACHE_SECONDS)))
    return verifier


def _refusal(refused: Refused):
    docs = current_app.config.get("SENSEI_DOCS_URL", DEFAULT_DOCS_URL)
    response = jsonify({"error": {"code": refused.code, "message": refused.message,
                                  "documentation_url": f"{docs}/errors#{refused.code}"}})
    response.status_code = refused.status
    response.headers.update(refused.headers)
    if refused.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def require_scopes(*scopes: str):
    """A view decorator: the caller's Bearer API key or access token must hold every scope."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
            credential = credential.strip()
            try:
                if scheme.lower() != "bearer" or not credential:
                    raise Refused(401, "unauthorized", "Missing API key or access token: send "
                                                       "Authorization: Bearer <credential>")
                principal = _verifier(current_app).principal(credential)
                missing = next((s for s in scopes if not grants(principal.scopes, s)), None)
                if missing is not None:
                    raise Refused(403, "forbidden", f"This credential lacks the required scope: {missing}")
            except Refused as refused:
                return _refusal(refused)
            g.sensei_principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorator

"""Token revocation (RFC 7009) and introspection (RFC 7662).

Both accept OAuth client authentication or ``Authorization: Bearer <API key>``. The caller
sees only tokens of its own organization; anything else is ``{"active": false}`` (and a
revocation of it is a silent no-op, RFC 7009 §2.2), so nothing leaks across tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authlib.common.errors import AuthlibHTTPError
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import request as flask_request

from app import metrics
from app.errors import ApiError
from app.extensions import db
from app.models import RefreshToken
from app.models.base import utcnow
from app.oauth.events import client_context
from app.oauth.grants import (
    ALL_CLIENT_AUTH,
    CONFIDENTIAL_CLIENT_AUTH,
    AddressNotAllowedError,
    RateLimitedError,
)
from app.oauth.tokens import decode_access_token, standing_of
from app.observability import principal_audit_context
from app.security import ip_rules, rate_limits
from app.security.rate_limits import UNLIMITED, Hit, known_generation
from app.services import api_keys as key_service
from app.services import audit as audit_log
from app.services import tokens as token_service
from app.services.api_keys import ActiveKey
from app.services.audit import AuditContext


class InvalidApiKeyError(InvalidClientError):
    """401 for a bad Bearer API key, challenging with the scheme the caller used (RFC 6750 §3)."""

    status_code = 401
    description = "Invalid API key provided."

    def get_headers(self):
        return [*AuthlibHTTPError.get_headers(self), ("WWW-Authenticate", 'Bearer error="invalid_token"')]


@dataclass
class ApiKeyCaller:
    """An API key standing in for a client at these two endpoints."""

    key: ActiveKey

    @property
    def org_id(self) -> str:
        return self.key.org_id

    client_id = None


@dataclass
class FoundToken:
    """A token of any kind, reduced to what these endpoints need."""

    kind: str  # "access_token" | "refresh_token" | "api_key"
    org_id: str
    client_id: str | None
    expires_at: datetime | None
    revoked: bool
    claims: dict[str, Any]
    row: Any = None

    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.revoked

    def check_client(self, client) -> bool:
        return client.client_id == self.client_id


def _timestamp(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value else None


def find_token(token: str) -> FoundToken | None:
    """Look the string up as an API key, a refresh token or one of our JWTs (hints are ignored,
    as RFC 7662 §2.1 allows: we always search every type)."""
    if not isinstance(token, str) or not token or len(token) > token_service.MAX_TOKEN_LENGTH:
        return None
    if token.startswith("sk_"):
        key = key_service.find_active_key(token)
        if key is None:
            return None
        return FoundToken(
            kind="api_key",
            org_id=key.org_id,
            client_id=None,
            expires_at=key.expires_at,
            revoked=False,
            claims={
                "scope": key.scope,
                "sub": key.id,
                "iat": _timestamp(key.created_at),
                "exp": _timestamp(key.expires_at),
                "environment": key.environment,
            },
            row=key,
        )
    if token.startswith("rt_"):
        row: RefreshToken | None = token_service.find_refresh_token_for_introspection(token)
        if row is None:
            return None
        return FoundToken(
            kind="refresh_token",
            org_id=row.org_id,
            client_id=row.client_id,
            expires_at=row.expires_at,
            revoked=row.revoked_at is not None or row.used_at is not None,
            claims={
                "scope": row.scope,
                "client_id": row.client_id,
                "sub": row.user_id,
                "iat": _timestamp(row.created_at),
                "exp": _timestamp(row.expires_at),
            },
            row=row,
        )
    claims = decode_access_token(token, check_expiry=False)
    if claims is None:
        return None
    # Cached under the generation the caller's own count read (same organization); a
    # token of another organization is read from the database (and answered inactive).
    standing, _ = standing_of(claims, count=lambda _bucket, _quota, org_id: Hit(UNLIMITED, known_generation(org_id)))
    return FoundToken(
        kind="access_token",
        org_id=claims["org"],
        client_id=claims["client_id"],
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        # A token whose client, user or service account is gone is as good as revoked.
        revoked=standing is None,
        claims=claims,
    )


def caller_context(caller, environ=None) -> AuditContext:
    """Who acts at these endpoints: the API key (or its service account), or the client."""
    if isinstance(caller, ApiKeyCaller):
        return principal_audit_context(caller.key.principal, environ)
    return client_context(caller, environ)


class _CallerAuthentication:
    """Mixin: a Bearer API key or the usual client authentication."""

    def authenticate_endpoint_client(self, request):
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer":
            try:
                key, hit = key_service.resolve_api_key(credential.strip(), count=rate_limits.count)
            except ApiError:
                metrics.authentication_failed("api")
                if not rate_limits.enforce_anonymous(flask_request.remote_addr).allowed:
                    raise RateLimitedError() from None
                raise InvalidApiKeyError() from None
            if not ip_rules.allowed_by_all(key.principal.ip_whitelists, flask_request.remote_addr):
                raise AddressNotAllowedError()
            if not rate_limits.remember(hit).decision.allowed:
                raise RateLimitedError()
            request.client = ApiKeyCaller(key)
            return request.client
        return super().authenticate_endpoint_client(request)  # type: ignore[misc]

    def check_params(self, request, client):
        if not request.form.get("token"):
            raise InvalidRequestError("Missing 'token' parameter.")
        if len(request.form.getlist("token")) > 1:
            raise InvalidRequestError("Multiple 'token' parameters.")


class Revocation(_CallerAuthentication, RevocationEndpoint):
    """RFC 7009. A client revokes its own tokens; an API key, any token of its organization."""

    CLIENT_AUTH_METHODS = ALL_CLIENT_AUTH

    def authenticate_token(self, request, client):
        self.check_params(request, client)
        found = find_token(request.form["token"])
        if found is None or found.kind == "api_key" or found.org_id != client.org_id:
            return None
        if not isinstance(client, ApiKeyCaller) and not found.check_client(client):
            return None
        return found

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string)

    def revoke_token(self, token: FoundToken, request):
        audit = caller_context(request.client)
        if token.kind == "refresh_token":
            # RFC 7009 §2.1: revoking a refresh token revokes its grant's access tokens too.
            token_service.revoke_family(token.row.family_id, reason="revoked")
            resource = token.row.family_id
        else:
            assert token.expires_at is not None  # every access token has an exp
            token_service.revoke_access_token(
                jti=token.claims["jti"], org_id=token.org_id, expires_at=token.expires_at, reason="revoked"
            )
            resource = token.claims["jti"]
        audit_log.record(audit, org_id=token.org_id, action="oauth.token.revoke", resource=resource)
        db.session.commit()


class Introspection(_CallerAuthentication, IntrospectionEndpoint):
    """RFC 7662 for access tokens, refresh tokens and API keys of the caller's organization."""

    CLIENT_AUTH_METHODS = CONFIDENTIAL_CLIENT_AUTH

    def authenticate_token(self, request, client):
        self.check_params(request, client)
        return found_for(request.form["token"], client.org_id)

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string)

    def check_permission(self, token, client, request):
        return token.org_id == client.org_id

    def create_endpoint_response(self, request):
        status, body, headers = super().create_endpoint_response(request)
        record_introspection(request.client, body)  # authenticated: a refused caller raised before this line
        return status, body, headers

    def create_introspection_payload(self, token: FoundToken | None) -> dict[str, Any]:
        return introspection_payload(token) if token is not None and is_active(token) else {"active": False}


def record_introspection(caller, body: dict[str, Any], environ=None, app=None) -> None:
    """The audit entry of an answered introspection."""
    audit_log.record_now(caller_context(caller, environ), app=app, org_id=caller.org_id,
                         action="oauth.token.introspect",
                         resource=(body.get("jti") or body.get("sub")) if body.get("active") else None)


def found_for(token: str, org_id: str) -> FoundToken | None:
    """The token if it is one of ``org_id``'s (what an introspecting caller may see)."""
    found = find_token(token)
    return found if found is not None and found.org_id == org_id else None


def is_active(token: FoundToken | None) -> bool:
    """RFC 7662 §2.2: a token found for the caller, neither expired nor revoked."""
    return token is not None and not token.is_expired() and not token.is_revoked()


def introspection_payload(token: FoundToken) -> dict[str, Any]:
    """The answer for an active token."""
    claims = token.claims
    payload = {
        "active": True,
        "token_type": token.kind,
        "scope": claims.get("scope", ""),
        "client_id": claims.get("client_id"),
        "sub": claims.get("sub"),
        "iss": claims.get("iss"),
        "aud": claims.get("aud"),
        "exp": claims.get("exp"),
        "iat": claims.get("iat"),
        "jti": claims.get("jti"),
        "org": token.org_id,
        "environment": claims.get("environment"),
    }
    return {k: v for k, v in payload.items() if v is not None}

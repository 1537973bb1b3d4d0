"""JWT access tokens (RFC 9068) signed with the cached RS256 key, and their verification."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from app.models import OAuthClient, User
from app.services import scopes as scope_rules
from app.services import tokens as token_service
from app.services.principals import Principal
from app.services.signing_keys import KeyRing

ACCESS_TOKEN_TYPE = "at+jwt"


def keyring() -> KeyRing:
    return current_app.extensions["sensei.keyring"]


def granted_scope(scope: str | None, client: OAuthClient) -> str:
    """Concrete scopes a token carries: the (already bounded) request, or all the client may have."""
    requested = scope_rules.parse(scope) if scope else client.scope.split()
    return scope_rules.to_string(scope_rules.expand(requested))


class AccessTokenGenerator:
    """Authlib token generator (``server.register_token_generator``) producing RS256 JWTs."""

    def __init__(self, *, issuer: str, audience: str, access_ttl: int) -> None:
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl

    def __call__(
        self,
        grant_type: str,
        client: Any,
        user: User | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        scope_string = granted_scope(scope, client)
        now = int(time.time())
        ttl = expires_in or self.access_ttl
        jti = secrets.token_urlsafe(16)
        claims = {
            "iss": self.issuer,
            "sub": user.id if user is not None else client.client_id,
            "aud": self.audience,
            "client_id": client.client_id,
            "scope": scope_string,
            "jti": jti,
            "iat": now,
            "exp": now + ttl,
            "org": client.org_id,
        }
        kid, key = keyring().signing_key()
        access_token = jwt.encode({"alg": "RS256", "kid": kid, "typ": ACCESS_TOKEN_TYPE}, claims, key)
        token: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope_string,
        }
        if include_refresh_token:
            token["refresh_token"] = token_service.new_refresh_token()
        # Read (and removed) by save_token before the response is written.
        token["_issued"] = token_service.IssuedAccessToken(
            jti=jti, expires_at=datetime.fromtimestamp(now + ttl, UTC)
        )
        return token


def decode_access_token(token: str, *, check_expiry: bool = True) -> dict[str, Any] | None:
    """Claims of a token we signed for our audience, or None. Revocation is not checked here."""
    if not token or len(token) > token_service.MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    ring = keyring()
    try:
        decoded = jwt.decode(token, ring.verify_set(), algorithms=["RS256"])
    except JoseError:
        ring.invalidate()  # a key rotated on another host appears within one refresh
        try:
            decoded = jwt.decode(token, ring.verify_set(), algorithms=["RS256"])
        except JoseError:
            return None
    except (ValueError, TypeError, KeyError):
        return None
    if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
        return None
    settings = current_app.config["SETTINGS"]
    registry = JWTClaimsRegistry(
        iss={"essential": True, "value": settings.ISSUER},
        aud={"essential": True, "value": settings.AUDIENCE},
        exp={"essential": True},
        jti={"essential": True},
        sub={"essential": True},
        client_id={"essential": True},
        org={"essential": True},
    )
    claims = decoded.claims
    try:
        if not check_expiry:
            claims = {k: v for k, v in claims.items() if k != "exp"} | {"exp": int(time.time()) + 1}
        registry.validate(claims)
    except JoseError:
        return None
    if not isinstance(decoded.claims.get("scope", ""), str):
        return None
    return decoded.claims


def active_access_token_claims(token: str) -> dict[str, Any] | None:
    claims = decode_access_token(token)
    if claims is None or token_service.is_access_token_revoked(claims["jti"]):
        return None
    return claims


def principal_for_claims(claims: dict[str, Any]) -> Principal:
    is_user = claims["sub"] != claims["client_id"]
    return Principal(
        org_id=claims["org"],
        type="user" if is_user else "client",
        id=claims["sub"],
        name="",
        scopes=frozenset(claims.get("scope", "").split()) & scope_rules.ALL,
        credential="access_token",
        credential_id=claims["jti"],
        client_id=claims["client_id"],
    )

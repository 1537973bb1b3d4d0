"""JWT access tokens (RFC 9068) signed with the cached RS256 key, and their verification."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry

from app.extensions import db
from app.models import OAuthClient, User
from app.models.base import id_entropy
from app.security.rate_limits import Hit
from app.services import clients as client_service
from app.services import freshness
from app.services import scopes as scope_rules
from app.services import tokens as token_service
from app.services.freshness import CredentialCache
from app.services.principals import Principal
from app.services.signing_keys import KeyRing

ACCESS_TOKEN_TYPE = "at+jwt"


def keyring() -> KeyRing:
    return current_app.extensions["sensei.keyring"]


def granted_scope(scope: str | None, client: OAuthClient, *, person: bool = True) -> str:
    """Concrete scopes a token carries: the (already bounded) request, or all the client may
    have — without OpenID Connect's when no person is behind the token (client credentials)."""
    requested = scope_rules.parse(scope, protocol=True) if scope else client.scope.split()
    concrete = scope_rules.expand(requested)
    return scope_rules.to_string(concrete if person else concrete & scope_rules.ALL)


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
        scope_string = granted_scope(scope, client, person=grant_type != "client_credentials")
        now = int(clock())
        ttl = expires_in or self.access_ttl
        jti = base64.urlsafe_b64encode(id_entropy.take(16)).rstrip(b"=").decode()  # as token_urlsafe(16)
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


def unverified_header(token: str) -> dict[str, Any]:
    """A JWT's header, read without verifying anything ({} if it is not one)."""
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(".", 1)[0] + "=="))
    except (ValueError, TypeError):
        return {}
    return header if isinstance(header, dict) else {}


def _unverified_kid(token: str) -> object:
    """The ``kid`` a token claims (only to pick a key)."""
    return unverified_header(token).get("kid")


clock = time.time  # the one clock of token verification (tests substitute a controlled one)


TIME_CLAIMS = ("exp", "nbf", "iat")


def decode_access_token(token: str, *, check_expiry: bool = True) -> dict[str, Any] | None:
    """Claims of a token we signed for our audience, or None. Revocation is not checked here.

    The clock is read once: every time claim is judged against the same second. With
    ``check_expiry=False`` (introspection reports expiry itself) ``exp`` must still be there.
    """
    if not token or len(token) > token_service.MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    now = int(clock())
    settings = current_app.config["SETTINGS"]
    claims = _checked_claims(token, now, settings.ISSUER, settings.AUDIENCE)
    if claims is None:
        return None
    expiry: dict[str, ClaimsOption] = {"exp": {"essential": True}} if check_expiry else {}
    registry = JWTClaimsRegistry(now, 0, **expiry)
    try:
        registry.validate({k: claims[k] for k in TIME_CLAIMS if k in claims and (check_expiry or k != "exp")})
    except JoseError:
        return None
    return dict(claims)


# A token's signature, header and claims never change: each process verifies a token once,
# judges every claim that does not depend on the time, and keeps the claims (by digest,
# with the issuer and audience they were judged for) while the token's key is published.
# The time claims are still judged at every use.
_CHECKED: CredentialCache[tuple[str, str, str, dict[str, Any]]] = CredentialCache()


def _checked_claims(token: str, now: int, issuer: str, audience: str) -> dict[str, Any] | None:
    token_digest = hashlib.sha256(token.encode()).hexdigest()
    entry = _CHECKED.get(token_digest)
    ring = keyring()
    if entry is not None:
        kid, checked_issuer, checked_audience, claims = entry.value
        if checked_issuer == issuer and checked_audience == audience and ring.knows(kid):
            return claims
    verified = _verified_token(token)
    if verified is None:
        return None
    kid, claims = verified
    essential: ClaimsOption = {"essential": True}
    registry = JWTClaimsRegistry(now, 0, iss={"essential": True, "value": issuer},
                                 aud={"essential": True, "value": audience},
                                 jti=essential, sub=essential, client_id=essential, org=essential)
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not isinstance(claims.get("scope", ""), str):
        return None
    try:
        registry.validate({k: v for k, v in claims.items() if k not in TIME_CLAIMS})
    except JoseError:
        return None
    _CHECKED.store(token_digest, (kid, issuer, audience, claims), None)
    return claims


def _verified_token(token: str) -> tuple[str, dict[str, Any]] | None:
    """The key id and claims of a token whose RS256 signature verifies against our keys and
    whose ``typ`` is ``at+jwt``, or None."""
    ring = keyring()
    try:
        decoded = jwt.decode(token, ring.verify_set(), algorithms=["RS256"])
    except JoseError:
        # Only a token naming a key we have not seen may be worth a second look.
        if not ring.refresh_for_unknown_kid(_unverified_kid(token)):
            return None
        try:
            decoded = jwt.decode(token, ring.verify_set(), algorithms=["RS256"])
        except JoseError:
            return None
    except (ValueError, TypeError, KeyError):
        return None
    if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
        return None
    return str(decoded.header.get("kid")), dict(decoded.claims)


def principal_for_claims(claims: dict[str, Any]) -> Principal | None:
    """Who a valid token speaks for, or None if its client, user or service account is gone.

    Checked on every use so that deleting a client, user or service account ends its tokens
    at once, and so that a service account's allow-list applies to its tokens too.
    """
    client = client_service.load_client_record(claims["client_id"])
    if client is None or client.org_id != claims["org"]:
        return None
    scopes = frozenset(claims.get("scope", "").split()) & scope_rules.ALL
    common = {"org_id": claims["org"], "credential": "access_token", "credential_id": claims["jti"],
              "client_id": client.client_id, "org": client.org}
    account = client.account
    if account is not None:
        return Principal(type="service_account", id=account.id, name=account.name,
                         scopes=scopes & scope_rules.expand(account.scope.split()),
                         ip_whitelists=(account.ip_whitelist,) if account.ip_whitelist else (), **common)
    if claims["sub"] == client.client_id:
        return Principal(type="client", id=client.client_id, name=client.name, scopes=scopes, **common)
    user = db.session.get(User, claims["sub"])
    if user is None or user.deleted_at is not None or user.org_id != claims["org"]:
        return None
    return Principal(type="user", id=user.id, name=user.email, scopes=scopes, role=user.role, **common)


# The standing of an unexpired access token — not revoked, and who it speaks for — is its
# principal (None: revoked, or the principal is gone), cached by ``jti``.
_STANDINGS: CredentialCache[Principal] = freshness.new_cache()


def load_standing(claims: dict[str, Any]) -> Principal | None:
    if token_service.is_access_token_revoked(claims["jti"]):
        return None
    return principal_for_claims(claims)


def standing_of(claims: dict[str, Any], *, count: freshness.Counter) -> tuple[Principal | None, Hit | None]:
    """The token's principal, or None if revoked or gone; cached under its organization's
    generation as read by ``count``."""
    return freshness.resolve(_STANDINGS, claims["jti"], load=lambda: load_standing(claims),
                             usable=lambda _principal: True, count=count)


def resolve_access_token(token: str, *, count: freshness.Counter) -> tuple[Principal, Hit] | None:
    """The principal of an active access token with its request counted, or None."""
    claims = decode_access_token(token)
    if claims is None:
        return None
    principal, hit = standing_of(claims, count=count)
    if principal is None or hit is None:
        return None
    return principal, hit


def principal_for_access_token(token: str) -> Principal | None:
    """The principal of an active (valid, unexpired, unrevoked) access token, or None."""
    claims = decode_access_token(token)
    if claims is None:
        return None
    return load_standing(claims)

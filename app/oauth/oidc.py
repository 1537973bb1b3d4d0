"""OpenID Connect on Authlib's support (``authlib.oidc.core``, RP-initiated logout): ID tokens
for the code, refresh and device grants, the claims of each scope, and the end-session
endpoint (SPEC §12).

ID tokens are signed by the key that signs access tokens, with ``typ: JWT`` — never
``at+jwt``, so an ID token presented as an access token is refused (``tokens.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from authlib.oidc.core import OpenIDCode, OpenIDToken, UserInfo
from authlib.oidc.core.util import create_half_hash
from authlib.oidc.rpinitiated import EndSessionEndpoint as AuthlibEndSessionEndpoint
from authlib.oidc.rpinitiated import EndSessionRequest
from flask import current_app
from joserfc import jwt

from app.models import User
from app.oauth import tokens
from app.services import tokens as token_service

ID_TOKEN_TYPE = "JWT"
CLAIMS = ("sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid", "email", "email_verified",
          "name")


def user_claims(user: User, scope: str) -> UserInfo:
    """``sub`` and the claims of the granted scopes (OpenID Connect Core §5.4). Sensei sends
    no verification mail, so ``email_verified`` is false."""
    scopes = scope.split()
    info = UserInfo(sub=user.id)
    if "email" in scopes:
        info["email"] = user.email
        info["email_verified"] = False
    if "profile" in scopes and user.name:
        info["name"] = user.name
    return info


def _epoch(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


class IDToken(OpenIDToken):
    """Adds ``id_token`` to a token response whose scope has ``openid`` (Authlib's hook),
    for any grant whose request knows the sign-in behind it: the authorization code, the
    refresh token (a refresh repeats ``auth_time`` and ``sid``, without the nonce) or the
    device authorization."""

    def encode_id_token(self, token: dict[str, Any], request) -> str:
        settings = current_app.config["SETTINGS"]
        source = request.authorization_code or request.refresh_token or request.credential
        now = int(tokens.clock())
        claims: dict[str, Any] = {"iss": settings.ISSUER, "aud": request.client.get_client_id(), "iat": now,
                                  "exp": now + settings.ACCESS_TOKEN_TTL}
        if source is not None:
            for name, value in (("auth_time", _epoch(source.auth_time)), ("sid", source.sid)):
                if value is not None:
                    claims[name] = value
        if request.authorization_code is not None and request.authorization_code.nonce:
            claims["nonce"] = request.authorization_code.nonce
        claims["at_hash"] = create_half_hash(token["access_token"], "RS256").decode()
        claims.update(user_claims(request.user, token["scope"]))
        kid, key = tokens.keyring().signing_key()
        return jwt.encode({"alg": "RS256", "kid": kid, "typ": ID_TOKEN_TYPE}, claims, key)


class CodeIDToken(IDToken, OpenIDCode):
    """The code flow's extension: Authlib's nonce and prompt checks, our ID token."""

    def exists_nonce(self, nonce: str, request) -> bool:
        return token_service.nonce_used(client_id=request.payload.client_id, nonce=nonce)


class EndSessionEndpoint(AuthlibEndSessionEndpoint):
    """RP-initiated logout: an ID token of ours as the hint, and a post-logout URI registered
    exactly for its client (redirect URIs count). Ending the session is the view's part."""

    def get_server_jwks(self):
        return tokens.keyring().verify_set()

    def get_algorithms(self) -> list[str]:
        return ["RS256"]

    def validate_request(self, request) -> EndSessionRequest:
        validated = super().validate_request(request)
        claims = validated.id_token_claims
        hint = request.payload.data.get("id_token_hint") or ""
        if claims is not None and (claims.get("iss") != current_app.config["SETTINGS"].ISSUER
                                   or tokens.unverified_header(hint).get("typ") != ID_TOKEN_TYPE):
            # Signed by us but not an ID token of ours (an access token): confirm, never redirect.
            validated.id_token_claims, validated.redirect_uri = None, None
        return validated

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        pass  # the view ends the browser's session (it knows the cookie)

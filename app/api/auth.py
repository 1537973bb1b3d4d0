"""Bearer authentication for /v1: an API key or one of our access tokens (RFC 6750 §2.1)."""

from __future__ import annotations

from functools import wraps

from flask import g, request

from app.errors import ApiError
from app.oauth.tokens import active_access_token_claims, principal_for_claims
from app.services import api_keys as key_service
from app.services.principals import Principal


def bearer_principal() -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise ApiError("unauthorized", "Missing API key or access token: send Authorization: Bearer <credential>")
    if credential.startswith("sk_"):
        return key_service.authenticate_api_key(credential)
    claims = active_access_token_claims(credential)
    if claims is None:
        raise ApiError("unauthorized", "Invalid, expired or revoked access token")
    return principal_for_claims(claims)


def require_principal(scope: str | None = None):
    """Authenticate the caller; with ``scope``, refuse (403) a caller that does not hold it."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            principal = bearer_principal()
            if scope is not None and not principal.has_scope(scope):
                raise ApiError("forbidden", f"This credential lacks the required scope: {scope}")
            g.principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorator

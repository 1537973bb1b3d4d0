"""Bearer authentication for /v1: an API key or one of our access tokens (RFC 6750 §2.1)."""

from __future__ import annotations

from functools import wraps

from flask import g, request

from app.errors import ApiError
from app.oauth.tokens import principal_for_access_token
from app.services import api_keys as key_service
from app.services.principals import Principal, require_address_allowed, require_scope


def bearer_principal() -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise ApiError("unauthorized", "Missing API key or access token: send Authorization: Bearer <credential>")
    if credential.startswith("sk_"):
        principal = key_service.authenticate_api_key(credential)
    else:
        found = principal_for_access_token(credential)
        if found is None:
            raise ApiError("unauthorized", "Invalid, expired or revoked access token")
        principal = found
    require_address_allowed(principal, request.remote_addr)
    return principal


def require_principal(scope: str | None = None):
    """Authenticate the caller; with ``scope``, refuse (403) a caller that does not hold it."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            principal = bearer_principal()
            if scope is not None:
                require_scope(principal, scope)
            g.principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorator


def creator_id(principal: Principal) -> str:
    """What ``created_by`` records: the user, or else the credential that acted."""
    return principal.id if principal.type == "user" else principal.credential_id

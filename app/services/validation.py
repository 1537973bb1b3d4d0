"""Field rules shared by every credential the API creates (keys, service accounts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.errors import ApiError
from app.models.base import utcnow
from app.services import scopes as scope_rules
from app.services.principals import Principal

NAME_MAX = 200


def valid_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX or "\x00" in name:
        raise ApiError("invalid_request", f"name must be a string of 1-{NAME_MAX} characters", param="name")
    return name.strip()


def valid_scopes(scopes: Any) -> list[str]:
    if isinstance(scopes, str):
        scopes = scopes.split()
    if not isinstance(scopes, list):
        raise ApiError("invalid_request", "scopes must be a list of scope names", param="scopes")
    try:
        requested = scope_rules.parse(scopes)
    except scope_rules.ScopeError as error:
        raise ApiError("invalid_request", str(error), param="scopes") from None
    if not requested:
        raise ApiError("invalid_request", "scopes must name at least one scope", param="scopes")
    return requested


def valid_expiry(expires_at: datetime | None) -> datetime | None:
    if expires_at is not None and expires_at <= utcnow():
        raise ApiError("invalid_request", "expires_at must be in the future", param="expires_at")
    return expires_at


def check_grantable(requested: list[str], granter: Principal | None) -> None:
    """403 naming the first scope the granter does not hold (None is the operator's CLI)."""
    if granter is None:
        return
    try:
        scope_rules.check_grantable(requested, granter.scopes, granter_role=granter.role)
    except scope_rules.ScopeError as error:
        raise ApiError("forbidden", str(error)) from None

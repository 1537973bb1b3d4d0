"""Who is calling: the one shape every credential (API key, token) resolves to."""

from __future__ import annotations

from dataclasses import dataclass

from app.extensions import db
from app.models import OAuthClient, Organization, User
from app.services.orgs import get_org


@dataclass(frozen=True)
class Principal:
    org_id: str
    type: str  # "api_key" | "user" | "client" | "service_account"
    id: str
    name: str  # filled where it is free; see display_name()
    scopes: frozenset[str]  # concrete catalogue scopes
    credential: str  # "api_key" | "access_token"
    credential_id: str  # key id, or the token's jti
    environment: str | None = None  # "live" | "test" for API keys
    client_id: str | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def organization_of(principal: Principal) -> Organization:
    return get_org(principal.org_id)


def display_name(principal: Principal) -> str:
    """A human name for a principal (looked up only where it is shown)."""
    if principal.name:
        return principal.name
    if principal.type == "user":
        user = db.session.get(User, principal.id)
        return user.email if user else ""
    if principal.type == "client":
        client = db.session.get(OAuthClient, principal.id)
        return client.name if client else ""
    return ""

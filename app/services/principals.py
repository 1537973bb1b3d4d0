"""Who is calling: the one shape every credential (API key, token) resolves to."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import ApiError
from app.extensions import db
from app.models import OAuthClient, Organization, ServiceAccount, User
from app.security import ip_rules
from app.security.rate_limits import Quota, quota_for
from app.services.orgs import get_org
from app.services.scopes import for_role


@dataclass(frozen=True)
class OrgSummary:
    """What a request needs of its organization: shown by /v1/me, sized by the tier."""

    id: str
    name: str
    tier: str
    quota: Quota | None

    @classmethod
    def of(cls, org: Organization) -> OrgSummary:
        return cls(org.id, org.name, org.tier, quota_for(org.tier, org.rate_limit_per_second, org.rate_limit_per_day))


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
    role: str | None = None  # for users: bounds what they may grant
    ip_whitelists: tuple[tuple[str, ...], ...] = ()  # each one must allow the caller
    org: OrgSummary | None = None  # loaded with the credential where that is free

    @property
    def bucket(self) -> str:
        """Whose rate limit a request of this principal counts against."""
        return f"{self.type}:{self.id}"

    @property
    def quota(self) -> Quota | None:
        return self.org.quota if self.org else None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def is_test(self) -> bool:
        return self.environment == "test"


def require_address_allowed(principal: Principal, address: str | None) -> None:
    """403 when an allow-list of the credential (or of its service account) refuses ``address``."""
    if not ip_rules.allowed_by_all(principal.ip_whitelists, address):
        raise ApiError("forbidden", f"Requests from {address} are not allowed for this credential")


def require_scope(principal: Principal, scope: str) -> None:
    if not principal.has_scope(scope):
        raise ApiError("forbidden", f"This credential lacks the required scope: {scope}")


def organization_of(principal: Principal) -> OrgSummary:
    return principal.org or OrgSummary.of(get_org(principal.org_id))


def active_service_account(sa_id: str | None) -> ServiceAccount | None:
    account = db.session.get(ServiceAccount, sa_id) if sa_id else None
    return account if account is not None and account.deleted_at is None else None


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


def user_principal(user: User) -> Principal:
    """A person signed in to the dashboard acts with everything their role holds."""
    return Principal(org_id=user.org_id, type="user", id=user.id, name=user.email, scopes=for_role(user.role),
                     credential="session", credential_id=user.id, role=user.role)

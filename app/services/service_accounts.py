"""Service accounts (SPEC §6): identities for automated systems.

Each account owns a confidential OAuth client for the client-credentials flow (its secret
is shown once) and may own API keys. Its scopes bound both, and its IP allow-list applies
to both. Deleting it revokes every key and token it holds.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.errors import ApiError
from app.extensions import db
from app.models import OAuthClient, ServiceAccount
from app.models.base import new_id, sane_id, utcnow
from app.security import ip_rules
from app.services import api_keys as key_service
from app.services import audit as audit_log
from app.services import clients as client_service
from app.services.audit import AuditContext
from app.services.pagination import Page, paginate
from app.services.principals import Principal
from app.services.validation import check_grantable, valid_name, valid_scopes

DESCRIPTION_MAX = 1000


def _valid_description(description: Any) -> str:
    if description is None:
        return ""
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX or "\x00" in description:
        raise ApiError("invalid_request", f"description must be a string of at most {DESCRIPTION_MAX} characters",
                       param="description")
    return description.strip()


def create_service_account(
    *,
    org_id: str,
    name: Any,
    scopes: Any,
    description: Any = None,
    ip_whitelist: Any = None,
    granter: Principal | None = None,
    created_by: str | None = None,
    audit: AuditContext | None = None,
) -> tuple[ServiceAccount, str]:
    """Create the account and its client; returns the account and the client secret (shown once)."""
    name = valid_name(name)
    requested = valid_scopes(scopes)
    description = _valid_description(description)
    whitelist = ip_rules.normalize_whitelist(ip_whitelist)
    check_grantable(requested, granter)
    account_id = new_id("sa")
    client, secret = client_service.new_client(
        org_id=org_id, name=f"{name} (service account)", redirect_uris=[], scopes=requested,
        created_by=created_by, service_account_id=account_id,
    )
    account = ServiceAccount(
        id=account_id, org_id=org_id, name=name, description=description, scope=" ".join(requested),
        ip_whitelist=whitelist, client_id=client.client_id, created_by=created_by,
    )
    db.session.add(account)
    audit_log.record(audit, org_id=org_id, action="service_accounts.create", resource=account.id)
    db.session.commit()
    assert secret is not None
    return account, secret


def _visible(org_id: str):
    return select(ServiceAccount).where(ServiceAccount.org_id == org_id, ServiceAccount.deleted_at.is_(None))


def list_service_accounts(*, org_id: str, limit: int, starting_after: str | None) -> Page:
    return paginate(_visible(org_id), ServiceAccount, limit=limit, starting_after=starting_after)


def get_service_account(*, org_id: str, account_id: str) -> ServiceAccount:
    account = db.session.scalar(_visible(org_id).where(ServiceAccount.id == account_id)) if sane_id(account_id) else None
    if account is None:
        raise ApiError("not_found", f"No such service account: {account_id[:64]!r}")
    return account


def update_service_account(*, org_id: str, account_id: str, changes: dict[str, Any],
                           granter: Principal | None, audit: AuditContext | None = None) -> ServiceAccount:
    account = get_service_account(org_id=org_id, account_id=account_id)
    client = db.session.get(OAuthClient, account.client_id)
    if "name" in changes:
        account.name = valid_name(changes["name"])
    if "description" in changes:
        account.description = _valid_description(changes["description"])
    if "ip_whitelist" in changes:
        account.ip_whitelist = ip_rules.normalize_whitelist(changes["ip_whitelist"])
    if "scopes" in changes:
        requested = valid_scopes(changes["scopes"])
        check_grantable(requested, granter)
        account.scope = " ".join(requested)
        if client is not None:
            client.scope = account.scope
    audit_log.record(audit, org_id=org_id, action="service_accounts.update", resource=account.id)
    db.session.commit()
    return account


def delete_service_account(*, org_id: str, account_id: str, audit: AuditContext | None = None) -> ServiceAccount:
    """Delete the account; its keys are revoked and its client's tokens stop working at once."""
    account = get_service_account(org_id=org_id, account_id=account_id)
    now = utcnow()
    account.deleted_at = now
    client = db.session.get(OAuthClient, account.client_id)
    if client is not None:
        client.deleted_at = now
    key_service.revoke_keys_of_service_account(account.id)
    audit_log.record(audit, org_id=org_id, action="service_accounts.delete", resource=account.id)
    db.session.commit()
    return account

"""Remembered consent: a user who granted a client some scopes is not asked again for them."""

from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.models import Consent, OAuthClient
from app.models.base import new_id, sane_id, utcnow
from app.services import audit as audit_log
from app.services import scopes as scope_rules
from app.services import tokens as token_service
from app.services.audit import AuditContext


def consented_scopes(*, user_id: str, client_id: str) -> frozenset[str]:
    row = db.session.scalar(select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id))
    return frozenset(row.scope.split()) if row else frozenset()


def covers(*, user_id: str, client_id: str, scope: str) -> bool:
    return frozenset(scope.split()) <= consented_scopes(user_id=user_id, client_id=client_id)


def record_consent(*, user_id: str, client_id: str, org_id: str, scope: str, audit: AuditContext | None = None) -> None:
    """Remember the grant, widening an earlier consent (never narrowing it silently)."""
    row = db.session.scalar(select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id))
    if row is None:
        db.session.add(Consent(id=new_id("cns"), user_id=user_id, client_id=client_id, scope=scope))
    else:
        row.scope = scope_rules.to_string(set(row.scope.split()) | set(scope.split()))
        row.updated_at = utcnow()
    audit_log.record(audit, org_id=org_id, action="oauth.consent.grant", resource=client_id)
    db.session.commit()


def consents_of_user(user_id: str) -> list[tuple[Consent, OAuthClient]]:
    """The apps a user approved (live clients only), newest first."""
    rows = db.session.execute(
        select(Consent, OAuthClient)
        .join(OAuthClient, OAuthClient.client_id == Consent.client_id)
        .where(Consent.user_id == user_id, OAuthClient.deleted_at.is_(None))
        .order_by(Consent.updated_at.desc())
    ).all()
    return [(consent, client) for consent, client in rows]


def revoke_consent(*, user_id: str, client_id: str, org_id: str, audit: AuditContext | None = None) -> bool:
    """Forget the consent and revoke every token the app holds for this user."""
    if not sane_id(client_id):  # from the URL: PostgreSQL refuses a NUL in a query
        return False
    row = db.session.scalar(select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id))
    if row is None:
        return False
    db.session.delete(row)
    token_service.revoke_grants(client_id=client_id, user_id=user_id, reason="consent_revoked")
    audit_log.record(audit, org_id=org_id, action="oauth.consent.revoke", resource=client_id)
    db.session.commit()
    return True

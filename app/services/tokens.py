"""Authorization codes, refresh-token rotation and revocation: the stateful side of tokens.

Single use is enforced by conditional UPDATEs whose row count decides (RFC 6749 §4.1.2,
RFC 9700 §4.14.2): two concurrent redemptions of one code or one refresh token cannot
both win, whatever the database or the number of processes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.models import AuthorizationCode, DeviceAuthorization, RefreshToken, RevokedAccessToken
from app.models.base import affected_rows, new_id, utcnow
from app.security.digests import digest
from app.services import audit as audit_log
from app.services import freshness
from app.services.audit import AuditContext

MAX_TOKEN_LENGTH = 4096


def new_refresh_token() -> str:
    return f"rt_{secrets.token_urlsafe(32)}"


def new_authorization_code() -> str:
    return secrets.token_urlsafe(32)


def _lookupable(secret: str | None) -> bool:
    return secret is not None and 0 < len(secret) <= MAX_TOKEN_LENGTH


# -- authorization codes ------------------------------------------------------------


def save_authorization_code(
    *,
    code: str,
    org_id: str,
    client_id: str,
    user_id: str,
    redirect_uri: str,
    scope: str,
    code_challenge: str | None,
    code_challenge_method: str | None,
    ttl_seconds: int,
    nonce: str | None = None,
    auth_time: datetime | None = None,
    sid: str | None = None,
) -> AuthorizationCode:
    row = AuthorizationCode(
        id=new_id("code"),
        code_digest=digest(code),
        org_id=org_id,
        client_id=client_id,
        user_id=user_id,
        redirect_uri=redirect_uri,
        scope=scope,
        code_challenge=code_challenge,
        code_challenge_method=code_challenge_method,
        nonce=nonce,
        auth_time=auth_time,
        sid=sid,
        expires_at=utcnow() + timedelta(seconds=ttl_seconds),
    )
    db.session.add(row)
    db.session.commit()
    return row


def nonce_used(*, client_id: str, nonce: str) -> bool:
    """Whether a code of this client already carried ``nonce`` (a replayed request)."""
    return db.session.scalar(select(AuthorizationCode.id).where(
        AuthorizationCode.client_id == client_id, AuthorizationCode.nonce == nonce).limit(1)) is not None


def find_authorization_code(code: str, client_id: str, audit: AuditContext | None = None) -> AuthorizationCode | None:
    """The unexpired code issued to ``client_id``. A code already redeemed is a replay:
    everything issued from it is revoked (RFC 6749 §4.1.2) and None is returned."""
    if not _lookupable(code):
        return None
    row = db.session.scalar(select(AuthorizationCode).where(AuthorizationCode.code_digest == digest(code)))
    if row is None or row.client_id != client_id:
        return None
    if row.used_at is not None:
        revoke_code_grant(row, audit)
        return None
    if row.expires_at <= utcnow():
        return None
    return row


def claim_authorization_code(row: AuthorizationCode, audit: AuditContext | None = None) -> bool:
    """Mark the code used; True for exactly one caller. The loser revokes the winner's tokens.

    The winner must record what it issues (``record_code_issue``) in the same transaction, so
    the row lock taken here makes a concurrent loser wait and then see those tokens.
    """
    result = db.session.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.id == row.id, AuthorizationCode.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if affected_rows(result) == 1:
        return True
    db.session.rollback()
    fresh = db.session.get(AuthorizationCode, row.id, populate_existing=True)
    if fresh is not None:
        revoke_code_grant(fresh, audit)
    return False


def revoke_code_grant(row: AuthorizationCode, audit: AuditContext | None = None) -> None:
    if row.issued_jti and row.issued_access_expires_at:
        revoke_access_token(
            jti=row.issued_jti, org_id=row.org_id, expires_at=row.issued_access_expires_at, reason="code_replay"
        )
    if row.issued_family_id:
        revoke_family(row.issued_family_id, reason="code_replay")
    audit_log.record(audit, org_id=row.org_id, action="oauth.code.replay_detected", resource=row.id,
                     result="failure")
    db.session.commit()


# -- issuing ------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedAccessToken:
    jti: str
    expires_at: datetime


def record_issue(
    *,
    access: IssuedAccessToken,
    refresh_token: str | None,
    org_id: str,
    client_id: str,
    user_id: str | None,
    scope: str,
    refresh_ttl: int,
    family_id: str | None = None,
    code: AuthorizationCode | None = None,
    audit: AuditContext | None = None,
    action: str = "oauth.token.issue",
    auth_time: datetime | None = None,
    sid: str | None = None,
) -> None:
    """Persist what a token response carries and audit it, then commit (closing the claim's
    transaction)."""
    if refresh_token is not None:
        family_id = family_id or new_id("fam")
        db.session.add(
            RefreshToken(
                id=new_id("rtk"),
                token_digest=digest(refresh_token),
                family_id=family_id,
                org_id=org_id,
                client_id=client_id,
                user_id=user_id,
                scope=scope,
                expires_at=utcnow() + timedelta(seconds=refresh_ttl),
                access_jti=access.jti,
                access_expires_at=access.expires_at,
                auth_time=auth_time,
                sid=sid,
            )
        )
    if code is not None:
        db.session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.id == code.id)
            .values(
                issued_jti=access.jti,
                issued_access_expires_at=access.expires_at,
                issued_family_id=family_id if refresh_token else None,
            )
            .execution_options(synchronize_session=False)
        )
    audit_log.record(audit, org_id=org_id, action=action, resource=access.jti)
    db.session.commit()


# -- refresh tokens -----------------------------------------------------------------


def find_refresh_token(token: str, audit: AuditContext | None = None) -> RefreshToken | None:
    """The usable refresh token for ``token``. Presenting a rotated one is reuse: the whole
    family is revoked (RFC 9700 §4.14.2) and None is returned."""
    if not _lookupable(token) or not token.startswith("rt_"):
        return None
    row = db.session.scalar(select(RefreshToken).where(RefreshToken.token_digest == digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    if row.used_at is not None:
        _reuse_detected(row, audit)
        return None
    if row.expires_at <= utcnow():
        return None
    return row


def claim_refresh_token(row: RefreshToken, audit: AuditContext | None = None) -> bool:
    """Mark the token rotated; True for exactly one caller. A loser is a reuse."""
    result = db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None), RefreshToken.revoked_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if affected_rows(result) == 1:
        return True
    db.session.rollback()
    _reuse_detected(row, audit)
    return False


def _reuse_detected(row: RefreshToken, audit: AuditContext | None) -> None:
    revoke_family(row.family_id, reason="refresh_reuse")
    audit_log.record(audit, org_id=row.org_id, action="oauth.refresh_token.reuse_detected",
                     resource=row.family_id, result="failure")
    db.session.commit()


def revoke_family(family_id: str, *, reason: str) -> None:
    """Revoke every refresh token of a grant and every access token issued with them."""
    now = utcnow()
    links = db.session.execute(
        select(RefreshToken.access_jti, RefreshToken.access_expires_at, RefreshToken.org_id).where(
            RefreshToken.family_id == family_id
        )
    ).all()
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    for jti, expires_at, org_id in links:
        if expires_at > now:
            revoke_access_token(jti=jti, org_id=org_id, expires_at=expires_at, reason=reason)


def revoke_grants(*, client_id: str, user_id: str | None = None, reason: str) -> int:
    """Revoke every refresh-token family (and its access tokens) of a client, or of one user
    of it. The caller commits."""
    stmt = select(RefreshToken.family_id).where(RefreshToken.client_id == client_id,
                                                 RefreshToken.revoked_at.is_(None)).distinct()
    if user_id is not None:
        stmt = stmt.where(RefreshToken.user_id == user_id)
    families = db.session.scalars(stmt).all()
    for family_id in families:
        revoke_family(family_id, reason=reason)
    return len(families)


# -- access tokens ------------------------------------------------------------------


def revoke_access_token(*, jti: str, org_id: str, expires_at: datetime, reason: str) -> None:
    """Record a revoked jti; revoking twice (even concurrently) is a no-op. The caller commits
    (and every cache of the organization's tokens is invalidated then)."""
    freshness.changed(db.session(), org_id)
    insert = postgresql_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.session.execute(
        insert(RevokedAccessToken)
        .values(jti=jti, org_id=org_id, expires_at=expires_at, revoked_at=utcnow(), reason=reason)
        .on_conflict_do_nothing(index_elements=["jti"])
    )


def is_access_token_revoked(jti: str) -> bool:
    return db.session.scalar(select(RevokedAccessToken.jti).where(RevokedAccessToken.jti == jti)) is not None


def find_refresh_token_for_introspection(token: str) -> RefreshToken | None:
    if not _lookupable(token) or not token.startswith("rt_"):
        return None
    return db.session.scalar(select(RefreshToken).where(RefreshToken.token_digest == digest(token)))


def prune(now: datetime | None = None) -> dict[str, int]:
    """Delete codes, refresh tokens and revocation records that can no longer matter."""
    now = now or utcnow()
    counts = {}
    for name, stmt in (
        ("authorization_codes", delete(AuthorizationCode).where(AuthorizationCode.expires_at < now - timedelta(days=1))),
        ("refresh_tokens", delete(RefreshToken).where(RefreshToken.expires_at < now)),
        ("revoked_access_tokens", delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now)),
        ("device_authorizations",
         delete(DeviceAuthorization).where(DeviceAuthorization.expires_at < now - timedelta(days=1))),
    ):
        counts[name] = affected_rows(db.session.execute(stmt))
    db.session.commit()
    return counts

"""Organizations, users and their browser sessions."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update

from app.errors import ApiError
from app.extensions import db
from app.models import ROLES, TIERS, AuditChainHead, AuditEvent, Organization, User, UserSession
from app.models.audit import GENESIS_HASH
from app.models.base import affected_rows, new_id, sane_id, utcnow
from app.security.digests import digest
from app.security.passwords import hash_password, password_problem, verify_password
from app.security.rate_limits import Quota, quota_for
from app.services import audit as audit_log
from app.services.audit import AuditContext

EMAIL_RE = re.compile(r"^[^@\s\x00]{1,64}@[^@\s\x00]{1,190}\.[^@\s\x00]{2,63}$")


def create_org(*, name: str, tier: str = "free") -> Organization:
    name = name.strip()
    if not name or len(name) > 200 or "\x00" in name:
        raise ApiError("invalid_request", "Organization name must be 1-200 characters", param="name")
    if tier not in TIERS:
        raise ApiError("invalid_request", f"Tier must be one of: {', '.join(TIERS)}", param="tier")
    org = Organization(id=new_id("org"), name=name, tier=tier)
    db.session.add(org)
    db.session.flush()
    db.session.add(AuditChainHead(org_id=org.id, seq=0, hash=GENESIS_HASH))
    db.session.commit()
    return org


def get_org(org_id: str) -> Organization:
    org = db.session.get(Organization, org_id) if sane_id(org_id) else None
    if org is None:
        raise ApiError("not_found", f"No organization {org_id[:40]!r}", param="org")
    return org


def quota_of_org(org_id: str) -> Quota | None:
    """The organization's rate-limit quota (its tier's, or its own on Enterprise)."""
    org = get_org(org_id)
    return quota_for(org.tier, org.rate_limit_per_second, org.rate_limit_per_day)


def set_limits(*, org_id: str, per_second: int, per_day: int) -> Organization:
    """Enterprise limits of an organization (SPEC §8)."""
    org = get_org(org_id)
    if org.tier != "enterprise":
        raise ApiError("invalid_request", "Custom limits apply to enterprise organizations only", param="tier")
    if not (1 <= per_second <= 1_000_000 and 1 <= per_day <= 1_000_000_000):
        raise ApiError("invalid_request", "Limits must be positive (per second up to 1,000,000)", param="limits")
    org.rate_limit_per_second, org.rate_limit_per_day = per_second, per_day
    db.session.commit()
    return org


def normalize_email(email: str) -> str:
    return email.strip().lower()


def display_name(name: str | None) -> str | None:
    """A person's optional display name (OpenID Connect's ``name``): trimmed, at most 200
    printable characters; empty means none."""
    name = (name or "").strip()
    if not name:
        return None
    if len(name) > 200 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ApiError("invalid_request", "Name must be at most 200 printable characters", param="name")
    return name


def create_user(*, org_id: str, email: str, password: str, role: str, name: str | None = None,
                audit: AuditContext | None = None) -> User:
    get_org(org_id)
    name = display_name(name)
    email = normalize_email(email)
    if not EMAIL_RE.match(email):
        raise ApiError("invalid_request", "Email address is not valid", param="email")
    if role not in ROLES:
        raise ApiError("invalid_request", f"Role must be one of: {', '.join(ROLES)}", param="role")
    problem = password_problem(password)
    if problem:
        raise ApiError("invalid_request", problem, param="password")
    if db.session.scalar(select(User.id).where(User.email == email)):
        raise ApiError("conflict", "A user with this email already exists", param="email")
    user = User(id=new_id("usr"), org_id=org_id, email=email, password_hash=hash_password(password), role=role,
                name=name)
    db.session.add(user)
    audit_log.record(audit, org_id=org_id, action="users.create", resource=user.id)
    db.session.commit()
    return user


def set_user_name(*, user: User, name: str | None, audit: AuditContext | None = None) -> User:
    user.name = display_name(name)
    audit_log.record(audit, org_id=user.org_id, action="users.update", resource=user.id)
    db.session.commit()
    return user


def authenticate_user(*, email: str, password: str) -> User | None:
    """The user for these credentials, or None; the same work whether the email exists or not."""
    email = normalize_email(email)
    user = user_by_email(email) if len(password) <= 1024 else None
    ok = verify_password(user.password_hash if user else None, password[:1024])
    return user if ok and user is not None else None


def user_by_email(email: str) -> User | None:
    email = normalize_email(email)
    if not EMAIL_RE.match(email):
        return None
    return db.session.scalar(select(User).where(User.email == email, User.deleted_at.is_(None)))


def start_session(*, user: User, ttl_seconds: int) -> str:
    """A new session id (returned in plaintext for the cookie only)."""
    session_id = secrets.token_urlsafe(32)
    db.session.add(
        UserSession(
            id_digest=digest(session_id),
            user_id=user.id,
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
        )
    )
    db.session.commit()
    return session_id


def signed_in(session_id: str | None) -> tuple[User, UserSession] | None:
    """The active user of a live session, with the session (its ``created_at`` is the time
    the user signed in)."""
    if not session_id or not isinstance(session_id, str) or len(session_id) > 100:
        return None
    row = db.session.get(UserSession, digest(session_id))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    user = db.session.get(User, row.user_id)
    return (user, row) if user is not None and user.deleted_at is None else None


def user_for_session(session_id: str | None) -> User | None:
    found = signed_in(session_id)
    return found[0] if found else None


def public_session_id(row: UserSession) -> str:
    """The session's id as relying parties see it (OpenID Connect ``sid``): derived from the
    stored digest, never the cookie's secret."""
    return hashlib.sha256(b"sensei-sid:" + row.id_digest.encode()).hexdigest()[:32]


def end_session(session_id: str | None) -> None:
    if not session_id or not isinstance(session_id, str) or len(session_id) > 100:
        return
    db.session.execute(
        update(UserSession)
        .where(UserSession.id_digest == digest(session_id), UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    db.session.commit()




def prune_sessions(now: datetime) -> int:
    result = db.session.execute(delete(UserSession).where(UserSession.expires_at < now))
    db.session.commit()
    return affected_rows(result)


# -- members -------------------------------------------------------------------------------


def members_of(org_id: str) -> list[User]:
    return list(db.session.scalars(
        select(User).where(User.org_id == org_id, User.deleted_at.is_(None)).order_by(User.created_at)
    ))


def get_member(*, org_id: str, user_id: str) -> User:
    user = db.session.get(User, user_id) if sane_id(user_id) else None
    if user is None or user.org_id != org_id or user.deleted_at is not None:
        raise ApiError("not_found", "No such member")
    return user


def _check_role_change(actor: User, role: str) -> None:
    if role not in ROLES:
        raise ApiError("invalid_request", f"Role must be one of: {', '.join(ROLES)}", param="role")
    if role == "owner" and actor.role != "owner":
        raise ApiError("forbidden", "Only an owner can make someone an owner", param="role")


def _owners_left(org_id: str, without: str) -> int:
    return len([u for u in members_of(org_id) if u.role == "owner" and u.id != without])


def add_member(*, actor: User, email: str, password: str, role: str, name: str | None = None,
               audit: AuditContext | None = None) -> User:
    _check_role_change(actor, role)
    return create_user(org_id=actor.org_id, email=email, password=password, role=role, name=name, audit=audit)


def change_role(*, actor: User, user_id: str, role: str, audit: AuditContext | None = None) -> User:
    member = get_member(org_id=actor.org_id, user_id=user_id)
    _check_role_change(actor, role)
    if member.role == "owner" and actor.role != "owner":
        raise ApiError("forbidden", "Only an owner can change an owner's role", param="role")
    if member.role == "owner" and role != "owner" and not _owners_left(actor.org_id, member.id):
        raise ApiError("invalid_request", "An organization keeps at least one owner", param="role")
    member.role = role
    audit_log.record(audit, org_id=actor.org_id, action="users.update", resource=member.id)
    db.session.commit()
    return member


def remove_member(*, actor: User, user_id: str, audit: AuditContext | None = None) -> User:
    """Remove a user: their sessions end and their tokens stop working at once."""
    member = get_member(org_id=actor.org_id, user_id=user_id)
    if member.id == actor.id:
        raise ApiError("invalid_request", "You cannot remove yourself", param="user_id")
    if member.role == "owner" and actor.role != "owner":
        raise ApiError("forbidden", "Only an owner can remove an owner")
    now = utcnow()
    member.deleted_at = now
    db.session.execute(update(UserSession).where(UserSession.user_id == member.id, UserSession.revoked_at.is_(None))
                       .values(revoked_at=now))
    audit_log.record(audit, org_id=actor.org_id, action="users.delete", resource=member.id)
    db.session.commit()
    return member


def calls_today(org_id: str) -> int:
    """Audited calls and events of the organization since midnight UTC."""
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    return db.session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.org_id == org_id,
                                                            AuditEvent.created_at >= midnight)
    ) or 0

"""Device authorizations (RFC 8628): a device asks, a person approves at /device, the device
polls for its tokens once.

The device code is kept as a digest; the user code — 8 letters of an alphabet without vowels
or look-alikes, shown ``XXXX-XXXX`` — is compared case-insensitively, dash optional. A
decision is taken once and a device code redeemed once, each by a conditional UPDATE.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import DeviceAuthorization
from app.models.base import affected_rows, new_id, utcnow
from app.security.digests import digest
from app.services import audit as audit_log
from app.services.audit import AuditContext

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels (no words), no 0/O or 1/I look-alikes
USER_CODE_LENGTH = 8
EXPIRES_IN = 600  # seconds a device code lives
INTERVAL = 5  # seconds between polls (RFC 8628 §3.5: slow_down adds 5)


def shown(user_code: str) -> str:
    return f"{user_code[:4]}-{user_code[4:]}"


def normalize_user_code(text: str | None) -> str | None:
    """The stored form of what a person typed (``bcdf-ghjk``, ``BCDFGHJK``, ...), or None."""
    if not text or len(text) > 32:
        return None
    code = "".join(text.split()).replace("-", "").upper()
    if len(code) != USER_CODE_LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


def start(*, client_id: str, org_id: str, scope: str, device_code: str) -> DeviceAuthorization:
    """Store a new request under ``device_code`` with a fresh, unused user code."""
    for _ in range(5):  # 20^8 codes: a collision is rare, and retried
        row = DeviceAuthorization(
            id=new_id("dev"), device_code_digest=digest(device_code),
            user_code="".join(secrets.choice(ALPHABET) for _ in range(USER_CODE_LENGTH)),
            org_id=org_id, client_id=client_id, scope=scope, interval=INTERVAL,
            expires_at=utcnow() + timedelta(seconds=EXPIRES_IN),
        )
        db.session.add(row)
        try:
            db.session.commit()
            return row
        except IntegrityError:
            db.session.rollback()
    raise RuntimeError("could not allocate a user code")


def pending_by_user_code(user_code: str) -> DeviceAuthorization | None:
    """The undecided, unexpired request with this (normalized) user code."""
    row = db.session.scalar(select(DeviceAuthorization).where(DeviceAuthorization.user_code == user_code))
    if row is None or row.decision is not None or row.expires_at <= utcnow():
        return None
    return row


def decide(row: DeviceAuthorization, *, user_id: str, approved: bool, scope: str, auth_time: datetime | None,
           sid: str | None, audit: AuditContext | None) -> bool:
    """Record the person's answer; False if the request was decided or expired meanwhile."""
    result = db.session.execute(
        update(DeviceAuthorization)
        .where(DeviceAuthorization.id == row.id, DeviceAuthorization.decision.is_(None),
               DeviceAuthorization.expires_at > utcnow())
        .values(decision="approved" if approved else "denied", user_id=user_id, scope_granted=scope,
                auth_time=auth_time, sid=sid)
        .execution_options(synchronize_session=False)
    )
    if affected_rows(result) != 1:
        db.session.rollback()
        return False
    audit_log.record(audit, org_id=row.org_id, action="oauth.device.authorize" if approved else "oauth.device.deny",
                     resource=row.client_id)
    db.session.commit()
    return True


def by_device_code(device_code: str) -> DeviceAuthorization | None:
    if not device_code or len(device_code) > 200:
        return None
    return db.session.scalar(select(DeviceAuthorization).where(
        DeviceAuthorization.device_code_digest == digest(device_code)))


def polled_too_soon(row: DeviceAuthorization) -> bool:
    """Note this poll; True (and the interval 5 s longer from now on) if it came sooner than
    the interval after the previous one (RFC 8628 §3.5 ``slow_down``)."""
    now = utcnow()
    too_soon = row.last_polled_at is not None and now - row.last_polled_at < timedelta(seconds=row.interval)
    values: dict = {"last_polled_at": now}
    if too_soon:
        values["interval"] = DeviceAuthorization.interval + 5
    db.session.execute(update(DeviceAuthorization).where(DeviceAuthorization.id == row.id).values(**values)
                       .execution_options(synchronize_session=False))
    db.session.commit()
    return too_soon


def claim(row: DeviceAuthorization) -> bool:
    """Spend an approved device code; True for exactly one poll. Left uncommitted: the token
    response's records commit with it."""
    result = db.session.execute(
        update(DeviceAuthorization)
        .where(DeviceAuthorization.id == row.id, DeviceAuthorization.used_at.is_(None),
               DeviceAuthorization.decision == "approved")
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if affected_rows(result) == 1:
        return True
    db.session.rollback()
    return False


"""API keys: format with checksum (SPEC §3), lifecycle, and bearer authentication.

Format: ``sk_live_`` or ``sk_test_``, 32 random base62 characters, then a 6-character
base62 CRC32 of everything before it (as GitHub's tokens do). A mistyped or forged key
fails the checksum and is refused without touching the database. Regex for scanners::

    \\bsk_(live|test)_[0-9A-Za-z]{38}\\b

Rules: a key never holds more than its creator (or its service account); a test
credential creates, sees and manages only test keys; a deleted or expired key stops
working at once, and its record stays for the audit trail.
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from app.errors import ApiError
from app.extensions import db
from app.models import ApiKey
from app.models.base import BASE62, affected_rows, new_id, random_base62, sane_id, utcnow
from app.security import ip_rules
from app.security.digests import digest
from app.services import audit as audit_log
from app.services import scopes as scope_rules
from app.services.audit import AuditContext
from app.services.pagination import Page, paginate
from app.services.principals import Principal, active_service_account
from app.services.validation import check_grantable, valid_expiry, valid_name, valid_scopes

RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_RE = re.compile(rf"^sk_(live|test)_[0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}}$")
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode("ascii"))
    chars = []
    for _ in range(CHECKSUM_LENGTH):
        value, rem = divmod(value, 62)
        chars.append(BASE62[rem])
    return "".join(reversed(chars))


def generate_key(environment: str) -> str:
    body = f"sk_{environment}_{random_base62(RANDOM_LENGTH)}"
    return body + _checksum(body)


def is_well_formed(key: str) -> bool:
    """Format and checksum only: no database work."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        return False
    return _checksum(key[:-CHECKSUM_LENGTH]) == key[-CHECKSUM_LENGTH:]


def redacted(key: ApiKey) -> str:
    return f"sk_{key.environment}_...{key.last4}"


# -- lifecycle -----------------------------------------------------------------------------


def create_api_key(
    *,
    org_id: str,
    name: str,
    scopes: list[str] | str,
    environment: str | None = None,
    expires_at: datetime | None = None,
    ip_whitelist: list[str] | None = None,
    service_account_id: str | None = None,
    granter: Principal | None = None,
    created_by: str | None = None,
    audit: AuditContext | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its plaintext (the only time the plaintext exists)."""
    name = valid_name(name)
    requested = valid_scopes(scopes)
    environment = environment or (granter.environment if granter and granter.environment else "live")
    if environment not in ("live", "test"):
        raise ApiError("invalid_request", "environment must be 'live' or 'test'", param="environment")
    if granter is not None and granter.is_test and environment != "test":
        raise ApiError("forbidden", "A test key can create only test keys")
    valid_expiry(expires_at)
    whitelist = ip_rules.normalize_whitelist(ip_whitelist)
    check_grantable(requested, granter)
    if service_account_id is not None:
        account = active_service_account(service_account_id) if sane_id(service_account_id) else None
        if account is None or account.org_id != org_id:
            raise ApiError("invalid_request", "No such service account", param="service_account_id")
        beyond = scope_rules.expand(requested) - scope_rules.expand(account.scope.split())
        if beyond:
            raise ApiError("invalid_request", f"The service account does not hold {scope_rules.to_string(beyond).split()[0]}",
                           param="scopes")
    plaintext = generate_key(environment)
    key = ApiKey(
        id=new_id("key"),
        org_id=org_id,
        name=name,
        key_digest=digest(plaintext),
        environment=environment,
        last4=plaintext[-4:],
        scope=" ".join(requested),
        ip_whitelist=whitelist,
        service_account_id=service_account_id,
        created_by=created_by,
        expires_at=expires_at,
    )
    db.session.add(key)
    audit_log.record(audit, org_id=org_id, action="api_keys.create", resource=key.id)
    db.session.commit()
    return key, plaintext


def _visible(org_id: str, viewer: Principal | None):
    stmt = select(ApiKey).where(ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None))
    if viewer is not None and viewer.is_test:
        stmt = stmt.where(ApiKey.environment == "test")
    return stmt


def list_api_keys(*, org_id: str, viewer: Principal | None, limit: int, starting_after: str | None) -> Page:
    return paginate(_visible(org_id, viewer), ApiKey, limit=limit, starting_after=starting_after)


def get_api_key(*, org_id: str, key_id: str, viewer: Principal | None) -> ApiKey:
    """The key, or 404 — for another organization's key too (never 403)."""
    key = None
    if sane_id(key_id):
        key = db.session.scalar(_visible(org_id, viewer).where(ApiKey.id == key_id))
    if key is None:
        raise ApiError("not_found", f"No such API key: {key_id[:64]!r}")
    return key


def update_api_key(*, org_id: str, key_id: str, changes: dict[str, Any], granter: Principal | None,
                   audit: AuditContext | None = None) -> ApiKey:
    key = get_api_key(org_id=org_id, key_id=key_id, viewer=granter)
    if "name" in changes:
        key.name = valid_name(changes["name"])
    if "ip_whitelist" in changes:
        key.ip_whitelist = ip_rules.normalize_whitelist(changes["ip_whitelist"])
    if "expires_at" in changes:
        key.expires_at = valid_expiry(changes["expires_at"])
    if "scopes" in changes:
        requested = valid_scopes(changes["scopes"])
        if not scope_rules.expand(requested) <= scope_rules.expand(key.scope.split()):
            raise ApiError("invalid_request", "scopes can only be narrowed", param="scopes")
        key.scope = " ".join(requested)
    audit_log.record(audit, org_id=org_id, action="api_keys.update", resource=key.id)
    db.session.commit()
    return key


def delete_api_key(*, org_id: str, key_id: str, viewer: Principal | None,
                   audit: AuditContext | None = None) -> ApiKey:
    key = get_api_key(org_id=org_id, key_id=key_id, viewer=viewer)
    key.revoked_at = utcnow()
    audit_log.record(audit, org_id=org_id, action="api_keys.delete", resource=key.id)
    db.session.commit()
    return key


# -- authentication ------------------------------------------------------------------------


def find_active_key(plaintext: str) -> ApiKey | None:
    """The live record for a presented key, or None if malformed, unknown, expired or deleted."""
    if not is_well_formed(plaintext):
        return None
    key = db.session.scalar(select(ApiKey).where(ApiKey.key_digest == digest(plaintext)))
    if key is None or key.revoked_at is not None:
        return None
    if key.expires_at is not None and key.expires_at <= utcnow():
        return None
    return key


def principal_for_key(key: ApiKey) -> Principal | None:
    """A key of a service account acts as the account, within the account's scopes and list."""
    scopes = scope_rules.expand(key.scope.split())
    whitelists: tuple[tuple[str, ...], ...] = (tuple(key.ip_whitelist or ()),)
    kind, principal_id, name = "api_key", key.id, key.name
    if key.service_account_id:
        account = active_service_account(key.service_account_id)
        if account is None:
            return None
        scopes &= scope_rules.expand(account.scope.split())
        whitelists += (tuple(account.ip_whitelist or ()),)
        kind, principal_id, name = "service_account", account.id, account.name
    return Principal(
        org_id=key.org_id,
        type=kind,
        id=principal_id,
        name=name,
        scopes=scopes,
        credential="api_key",
        credential_id=key.id,
        environment=key.environment,
        ip_whitelists=tuple(w for w in whitelists if w),
    )


def authenticate_api_key(plaintext: str) -> Principal:
    key = find_active_key(plaintext)
    principal = principal_for_key(key) if key is not None else None
    if key is None or principal is None:
        raise ApiError("unauthorized", "Invalid API key provided")
    touch_last_used(key)
    return principal


def touch_last_used(key: ApiKey) -> None:
    """Record use at most once a minute per key, so the hot path rarely writes."""
    now = utcnow()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    threshold = now - LAST_USED_RESOLUTION
    db.session.execute(
        update(ApiKey)
        .where(ApiKey.id == key.id)
        .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < threshold))
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def revoke_keys_of_service_account(service_account_id: str) -> int:
    """Revoke every key of a service account. The caller commits."""
    result = db.session.execute(
        update(ApiKey)
        .where(ApiKey.service_account_id == service_account_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return affected_rows(result)

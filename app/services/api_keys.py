"""API keys: format with checksum (SPEC §3), creation, and bearer authentication.

Format: ``sk_live_`` or ``sk_test_``, 32 random base62 characters, then a 6-character
base62 CRC32 of everything before it (as GitHub's tokens do). A mistyped or forged key
fails the checksum and is refused without touching the database. Regex for scanners::

    \\bsk_(live|test)_[0-9A-Za-z]{38}\\b
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime, timedelta

from sqlalchemy import select, update

from app.errors import ApiError
from app.extensions import db
from app.models import ApiKey, Organization
from app.models.base import BASE62, new_id, random_base62, utcnow
from app.security.digests import digest
from app.services import scopes as scope_rules
from app.services.principals import Principal

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
    if not KEY_RE.match(key):
        return False
    return _checksum(key[:-CHECKSUM_LENGTH]) == key[-CHECKSUM_LENGTH:]


def create_api_key(
    *,
    org_id: str,
    name: str,
    scopes: list[str] | str,
    environment: str = "live",
    expires_at: datetime | None = None,
    created_by: str | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its plaintext (the only time the plaintext exists)."""
    name = (name or "").strip()
    if not name or len(name) > 200 or "\x00" in name:
        raise ApiError("invalid_request", "Name must be 1-200 characters", param="name")
    if environment not in ("live", "test"):
        raise ApiError("invalid_request", "Environment must be live or test", param="environment")
    try:
        requested = scope_rules.parse(scopes)
    except scope_rules.ScopeError as error:
        raise ApiError("invalid_request", str(error), param="scopes") from None
    if not requested:
        raise ApiError("invalid_request", "At least one scope is required", param="scopes")
    if expires_at is not None and expires_at <= utcnow():
        raise ApiError("invalid_request", "expires_at must be in the future", param="expires_at")
    plaintext = generate_key(environment)
    key = ApiKey(
        id=new_id("key"),
        org_id=org_id,
        name=name,
        key_digest=digest(plaintext),
        environment=environment,
        last4=plaintext[-4:],
        scope=" ".join(requested),
        ip_whitelist=[],
        created_by=created_by,
        expires_at=expires_at,
    )
    db.session.add(key)
    db.session.commit()
    return key, plaintext


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


def principal_for_key(key: ApiKey) -> Principal:
    return Principal(
        org_id=key.org_id,
        type="api_key",
        id=key.id,
        name=key.name,
        scopes=scope_rules.expand(key.scope.split()),
        credential="api_key",
        credential_id=key.id,
        environment=key.environment,
    )


def authenticate_api_key(plaintext: str) -> Principal:
    key = find_active_key(plaintext)
    if key is None:
        raise ApiError("unauthorized", "Invalid API key provided")
    touch_last_used(key)
    return principal_for_key(key)


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


def org_name(org_id: str) -> str:
    org = db.session.get(Organization, org_id)
    return org.name if org else ""

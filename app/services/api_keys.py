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
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from app.errors import ApiError
from app.extensions import db
from app.models import ApiKey, Organization, ServiceAccount
from app.models.base import BASE62, affected_rows, new_id, random_base62, sane_id, utcnow
from app.security import ip_rules
from app.security.digests import digest
from app.security.rate_limits import Hit, Quota
from app.services import audit as audit_log
from app.services import freshness
from app.services import scopes as scope_rules
from app.services.audit import AuditContext
from app.services.freshness import CredentialCache
from app.services.pagination import Page, paginate
from app.services.principals import OrgSummary, Principal, active_service_account
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


@dataclass(frozen=True)
class ActiveKey:
    """An API key as a request needs it: the key, who it acts as, and its organization."""

    id: str
    org_id: str
    name: str
    scope: str
    environment: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    principal: Principal

    @property
    def bucket(self) -> str:
        return self.principal.bucket

    @property
    def quota(self) -> Quota | None:
        return self.principal.quota

    def is_active(self, now: datetime | None = None) -> bool:
        return self.expires_at is None or self.expires_at > (now or utcnow())


_KEYS: CredentialCache[ActiveKey] = freshness.new_cache()


def load_active_key(key_digest: str) -> ActiveKey | None:
    """One query: the unrevoked key with this digest, its service account and organization."""
    row = db.session.execute(
        select(ApiKey, ServiceAccount, Organization)
        .join(Organization, Organization.id == ApiKey.org_id)
        .outerjoin(ServiceAccount, ServiceAccount.id == ApiKey.service_account_id)
        .where(ApiKey.key_digest == key_digest, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    key, account, org = row
    principal = principal_for_key(key, account, org)
    if principal is None:
        return None
    return ActiveKey(id=key.id, org_id=key.org_id, name=key.name, scope=key.scope, environment=key.environment,
                     created_at=key.created_at, expires_at=key.expires_at, last_used_at=key.last_used_at,
                     principal=principal)


def find_active_key(plaintext: str) -> ActiveKey | None:
    """The live key for a presented one, or None if malformed, unknown, expired or deleted."""
    if not is_well_formed(plaintext):
        return None
    key = load_active_key(digest(plaintext))
    return key if key is not None and key.is_active() else None


def principal_for_key(key: ApiKey, account: ServiceAccount | None, org: Organization) -> Principal | None:
    """A key of a service account acts as the account, within the account's scopes and list."""
    scopes = scope_rules.expand(key.scope.split())
    whitelists: tuple[tuple[str, ...], ...] = (tuple(key.ip_whitelist or ()),)
    kind, principal_id, name = "api_key", key.id, key.name
    if key.service_account_id:
        if account is None or account.deleted_at is not None:
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
        org=OrgSummary.of(org),
    )


def resolve_api_key(plaintext: str, *, count: freshness.Counter) -> tuple[ActiveKey, Hit]:
    """Authenticate a presented key and count the request: the hot path of every key-bearing
    call. 401 for a malformed, unknown, expired or deleted key (nothing counted)."""
    key_digest = digest(plaintext)
    # A digest in the cache is of a key that was well formed; anything else is checked
    # first, so a mistyped or forged key costs no database read.
    if key_digest not in _KEYS and not is_well_formed(plaintext):
        raise ApiError("unauthorized", "Invalid API key provided")
    key, hit = freshness.resolve(_KEYS, key_digest, load=lambda: load_active_key(key_digest),
                                 usable=ActiveKey.is_active, count=count)
    if key is None or hit is None or not key.is_active():
        raise ApiError("unauthorized", "Invalid API key provided")
    touch_last_used(key)
    return key, hit


def cached_active_key(plaintext: str) -> freshness.Entry[ActiveKey] | None:
    """The cache entry of the active key for a presented one, if this process has it
    (``freshness.cached``)."""
    if not plaintext.startswith("sk_"):
        return None
    return freshness.cached(_KEYS, digest(plaintext), ActiveKey.is_active)


def authenticate_api_key(plaintext: str) -> Principal:
    """The principal of a presented key (read from the database; nothing counted)."""
    key = find_active_key(plaintext)
    if key is None:
        raise ApiError("unauthorized", "Invalid API key provided")
    touch_last_used(key)
    return key.principal


_touched: dict[str, float] = {}  # key id -> when this process last recorded its use (monotonic)


def last_use_due(key: ActiveKey) -> bool:
    """Whether this use of ``key`` is to be recorded: at most once a minute per key."""
    now, seen = utcnow(), time.monotonic()
    last = _touched.get(key.id)
    if last is None and key.last_used_at is not None:
        last = seen - (now - key.last_used_at).total_seconds()
    return last is None or seen - last >= LAST_USED_RESOLUTION.total_seconds()


def touch_last_used(key: ActiveKey) -> None:
    """Record use at most once a minute per key, so the hot path rarely writes."""
    if not last_use_due(key):
        return
    now, seen = utcnow(), time.monotonic()
    if len(_touched) > 10_000:
        _touched.clear()
    _touched[key.id] = seen
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

"""OAuth client registration and secret checks (RFC 6749 §2, RFC 8252 §7.3 for loopback)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from app.errors import ApiError
from app.extensions import db
from app.models import OAuthClient, Organization, ServiceAccount
from app.models.base import random_base62, sane_id, utcnow
from app.security.digests import digest, matches
from app.security.rate_limits import Quota
from app.services import audit as audit_log
from app.services import scopes as scope_rules
from app.services import tokens as token_service
from app.services.audit import AuditContext
from app.services.orgs import get_org
from app.services.principals import OrgSummary

MAX_REDIRECT_URIS = 20
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
# The grants a client may be registered for, by the short name the CLI and the dashboard use.
GRANT_TYPES: dict[str, str] = {
    "authorization_code": "authorization_code",
    "refresh_token": "refresh_token",
    "client_credentials": "client_credentials",
    "device_code": DEVICE_CODE,
}
MAX_REDIRECT_URI_LENGTH = 2000


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be registered, or None. Exact URIs only: no wildcards, no fragments."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_REDIRECT_URI_LENGTH:
        return "must be a URI of at most 2000 characters"
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in uri):
        return "must be printable ASCII without spaces"
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        return "is not a valid URI"
    if parts.fragment or "#" in uri:
        return "must not contain a fragment (RFC 6749 §3.1.2)"
    if "*" in uri:
        return "must not contain wildcards"
    if parts.scheme == "https":
        return None if host else "must have a host"
    if parts.scheme == "http":
        if host in ("localhost",) or _is_loopback(host):
            return None
        return "must use https (http is allowed only for loopback addresses)"
    if parts.scheme and "." in parts.scheme and parts.path:
        return None  # private-use scheme of a native app, RFC 8252 §7.1
    return "must be an https URI, an http loopback URI or a reverse-domain private-use scheme"


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_client(*, audit: AuditContext | None = None, **fields: Any) -> tuple[OAuthClient, str | None]:
    """Register a client (fields as for ``new_client``); returns it with its secret in plaintext
    (None for a public client) — the only time the secret exists."""
    client, secret = new_client(**fields)
    audit_log.record(audit, org_id=client.org_id, action="oauth_clients.create", resource=client.client_id)
    db.session.commit()
    return client, secret


def new_client(
    *,
    org_id: str,
    name: str,
    redirect_uris: list[str],
    scopes: list[str] | str,
    public: bool = False,
    created_by: str | None = None,
    service_account_id: str | None = None,
    grant_types: list[str] | None = None,
    post_logout_redirect_uris: list[str] | None = None,
) -> tuple[OAuthClient, str | None]:
    """Validate and add a client to the session; the caller commits.

    ``grant_types`` (short names of GRANT_TYPES) defaults to the code flow with refresh
    tokens when there are redirect URIs, plus client credentials for a confidential client."""
    get_org(org_id)
    name = (name or "").strip()
    if not name or len(name) > 200 or "\x00" in name:
        raise ApiError("invalid_request", "Name must be 1-200 characters", param="name")
    if len(redirect_uris) > MAX_REDIRECT_URIS:
        raise ApiError("invalid_request", f"At most {MAX_REDIRECT_URIS} redirect URIs", param="redirect_uris")
    post_logout_redirect_uris = list(post_logout_redirect_uris or [])
    for param, uris in (("redirect_uris", redirect_uris), ("post_logout_redirect_uris", post_logout_redirect_uris)):
        if len(uris) > MAX_REDIRECT_URIS:
            raise ApiError("invalid_request", f"At most {MAX_REDIRECT_URIS} URIs", param=param)
        for uri in uris:
            problem = redirect_uri_problem(uri)
            if problem:
                raise ApiError("invalid_request", f"URI {uri[:200]!r} {problem}", param=param)
    grants = _grant_types(grant_types, redirect_uris=redirect_uris, public=public)
    try:
        # A service account's client acts for no person: no OpenID Connect scopes.
        requested = scope_rules.parse(scopes, protocol=service_account_id is None)
    except scope_rules.ScopeError as error:
        raise ApiError("invalid_request", str(error), param="scopes") from None
    if not requested:
        raise ApiError("invalid_request", "At least one scope is required", param="scopes")
    secret = None if public else f"cs_{random_base62(43)}"
    client = OAuthClient(
        client_id=f"cl_{random_base62(24)}",
        org_id=org_id,
        name=name,
        secret_digest=digest(secret) if secret else None,
        is_public=public,
        redirect_uris=list(dict.fromkeys(redirect_uris)),
        post_logout_redirect_uris=list(dict.fromkeys(post_logout_redirect_uris)),
        grant_types=" ".join(grants),
        scope=" ".join(requested),
        created_by=created_by,
        service_account_id=service_account_id,
    )
    db.session.add(client)
    return client, secret


def _grant_types(names: list[str] | None, *, redirect_uris: list[str], public: bool) -> list[str]:
    if names is None:  # the defaults
        names = (["authorization_code", "refresh_token"] if redirect_uris else []) + ([] if public else
                                                                                      ["client_credentials"])
    unknown = [n for n in names if n not in GRANT_TYPES]
    if unknown:
        raise ApiError("invalid_request", f"Unknown grant type {unknown[0][:40]!r}: choose from "
                       f"{', '.join(GRANT_TYPES)}", param="grant_types")
    if "authorization_code" in names and not redirect_uris:
        raise ApiError("invalid_request", "The authorization_code grant needs at least one redirect URI",
                       param="redirect_uris")
    if "client_credentials" in names and public:
        raise ApiError("invalid_request", "A public client cannot use client_credentials", param="grant_types")
    if public and not names:
        raise ApiError("invalid_request", "A public client needs a redirect URI or the device_code grant",
                       param="redirect_uris")
    if not names:
        raise ApiError("invalid_request", "At least one grant type is required", param="grant_types")
    return [GRANT_TYPES[n] for n in dict.fromkeys(names)]


def get_active_client(client_id: str | None) -> OAuthClient | None:
    if not client_id or not sane_id(client_id):
        return None
    client = db.session.get(OAuthClient, client_id)
    if client is None or client.deleted_at is not None:
        return None
    return client


@dataclass(frozen=True)
class AccountSummary:
    """The service account a client acts as: its name, scope bound and allow-list."""

    id: str
    name: str
    scope: str
    ip_whitelist: tuple[str, ...]


@dataclass(frozen=True)
class ClientRecord:
    """An active client as the OAuth endpoints need it, with its service account and org."""

    client_id: str
    org_id: str
    name: str
    secret_digest: str | None
    is_public: bool
    redirect_uris: tuple[str, ...]
    grant_types: str
    scope: str
    service_account_id: str | None
    account: AccountSummary | None  # None for a plain client
    org: OrgSummary

    @property
    def bucket(self) -> str:
        return (f"service_account:{self.service_account_id}" if self.service_account_id
                else f"client:{self.client_id}")

    @property
    def quota(self) -> Quota | None:
        return self.org.quota


def load_client_record(client_id: str | None) -> ClientRecord | None:
    """One query: the active client, its (active) service account and its organization."""
    if not client_id or not sane_id(client_id):
        return None
    row = db.session.execute(
        select(OAuthClient, ServiceAccount, Organization)
        .join(Organization, Organization.id == OAuthClient.org_id)
        .outerjoin(ServiceAccount, ServiceAccount.id == OAuthClient.service_account_id)
        .where(OAuthClient.client_id == client_id, OAuthClient.deleted_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    client, account, org = row
    summary = None
    if client.service_account_id:
        if account is None or account.deleted_at is not None:
            return None  # a client of a deleted service account is gone with it
        summary = AccountSummary(account.id, account.name, account.scope, tuple(account.ip_whitelist or ()))
    return ClientRecord(
        client_id=client.client_id, org_id=client.org_id, name=client.name, secret_digest=client.secret_digest,
        is_public=client.is_public, redirect_uris=tuple(client.redirect_uris or ()), grant_types=client.grant_types,
        scope=client.scope, service_account_id=client.service_account_id, account=summary,
        org=OrgSummary.of(org),
    )


def check_client_secret(client: OAuthClient | ClientRecord, secret: str) -> bool:
    return not client.is_public and matches(secret, client.secret_digest)


def clients_of_org(org_id: str) -> list[OAuthClient]:
    """The organization's own OAuth apps (not the clients of service accounts), newest first."""
    return list(db.session.scalars(
        select(OAuthClient)
        .where(OAuthClient.org_id == org_id, OAuthClient.deleted_at.is_(None),
               OAuthClient.service_account_id.is_(None))
        .order_by(OAuthClient.created_at.desc())
    ))


def get_org_client(*, org_id: str, client_id: str) -> OAuthClient:
    """An app of this organization, or 404 (another org's app too)."""
    client = get_active_client(client_id)
    if client is None or client.org_id != org_id or client.service_account_id is not None:
        raise ApiError("not_found", "No such application")
    return client


def rotate_client_secret(*, org_id: str, client_id: str, audit: AuditContext | None = None) -> str:
    """A new secret (returned once); the old one stops working at once."""
    client = get_org_client(org_id=org_id, client_id=client_id)
    if client.is_public:
        raise ApiError("invalid_request", "A public client has no secret", param="client_id")
    secret = f"cs_{random_base62(43)}"
    client.secret_digest = digest(secret)
    audit_log.record(audit, org_id=org_id, action="oauth_clients.rotate_secret", resource=client.client_id)
    db.session.commit()
    return secret


def delete_client(*, org_id: str, client_id: str, audit: AuditContext | None = None) -> OAuthClient:
    """Delete an app: its secret, refresh tokens and access tokens stop working at once."""
    client = get_org_client(org_id=org_id, client_id=client_id)
    client.deleted_at = utcnow()
    token_service.revoke_grants(client_id=client.client_id, reason="client_deleted")
    audit_log.record(audit, org_id=org_id, action="oauth_clients.delete", resource=client.client_id)
    db.session.commit()
    return client

"""Factories: real rows made through the same services the app uses."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import requests

from app.services import api_keys as key_service
from app.services import clients as client_service
from app.services import orgs as org_service

PASSWORD = "correct horse battery staple"
REDIRECT_URI = "https://app.example.com/callback"
CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def make_org(name: str = "Acme", tier: str = "enterprise"):
    """Enterprise without limits set is not rate limited; tests/test_rate_limits.py uses tiers."""
    return org_service.create_org(name=name, tier=tier)


def make_user(org, role: str = "owner", email: str | None = None, name: str | None = None):
    email = email or f"{role}-{secrets.token_hex(4)}@example.com"
    return org_service.create_user(org_id=org.id, email=email, password=PASSWORD, role=role, name=name)


@dataclass
class ClientCredentials:
    client_id: str
    client_secret: str | None
    org_id: str


def make_client(org, *, scopes: str = "migrations:read migrations:write connections:read",
                redirect_uris=(REDIRECT_URI,), public: bool = False, created_by: str | None = None,
                grant_types: list[str] | None = None, post_logout_redirect_uris=()):
    client, secret = client_service.create_client(
        org_id=org.id, name="Test App", redirect_uris=list(redirect_uris), scopes=scopes.split(),
        public=public, created_by=created_by, grant_types=grant_types,
        post_logout_redirect_uris=list(post_logout_redirect_uris),
    )
    return ClientCredentials(client.client_id, secret, org.id)


def make_api_key(org, *, scopes: str = "*", environment: str = "live", expires_at=None):
    key, plaintext = key_service.create_api_key(
        org_id=org.id, name="Test key", scopes=scopes.split(), environment=environment, expires_at=expires_at
    )
    return key, plaintext


class Browser:
    """A person with a browser, driven over real HTTP (no redirects followed automatically)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()

    def csrf(self, html: str) -> str:
        match = CSRF_RE.search(html)
        assert match, "no CSRF token in page"
        return match.group(1)

    def login(self, email: str, password: str = PASSWORD, next_path: str | None = None) -> requests.Response:
        page = self.http.get(f"{self.base_url}/login", params={"next": next_path} if next_path else None)
        return self.http.post(
            f"{self.base_url}/login",
            data={"email": email, "password": password, "csrf_token": self.csrf(page.text),
                  "next": next_path or "/"},
            allow_redirects=False,
        )

    def authorize(self, url: str) -> requests.Response:
        return self.http.get(url, allow_redirects=False)

    def decide(self, consent_page: requests.Response, decision: str = "allow") -> requests.Response:
        action = re.search(r'<form method="post" action="([^"]+)" class="decision">', consent_page.text)
        assert action, "no consent form"
        path = action.group(1).replace("&amp;", "&")
        return self.http.post(
            f"{self.base_url}{path}", data={"csrf_token": self.csrf(consent_page.text), "decision": decision},
            allow_redirects=False,
        )


def callback_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code in (302, 303), response.text[:500]
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class SourceAddressAdapter(requests.adapters.HTTPAdapter):
    """Connect from a chosen loopback address, to be "another machine" for allow-lists."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        return super().init_poolmanager(*args, **kwargs)


def http_from(source: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(source))
    return session


def eventually(check, *, timeout: float = 10.0, interval: float = 0.05):
    """``check()``'s value once it stops raising AssertionError (bounded by ``timeout``).

    For what a server does just after answering: a standalone audit entry is written by the
    worker's writer thread a few milliseconds after the response that it records."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


def audit_written(org_id: str, at_least: int, **where) -> int:
    """Wait (bounded) until the organization has ``at_least`` audit entries matching ``where``
    (columns of AuditEvent): the servers' writers record reads a moment after answering."""
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import AuditEvent

    def count() -> int:
        db.session.rollback()  # a fresh snapshot each time
        stmt = select(func.count()).select_from(AuditEvent).where(AuditEvent.org_id == org_id)
        for column, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, column) == value)
        found = db.session.scalar(stmt) or 0
        assert found >= at_least, f"{found} of {at_least} audit entries written"
        return found

    return eventually(count)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def row_counts() -> dict[str, int]:
    """Rows per table, audit tables aside (refusals are audited): what a rejected request must
    leave as it was."""
    from sqlalchemy import func, select

    from app.extensions import db

    db.session.rollback()  # a fresh snapshot
    return {name: db.session.scalar(select(func.count()).select_from(table)) or 0
            for name, table in db.metadata.tables.items() if not name.startswith("audit_")}

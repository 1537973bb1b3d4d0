"""Who acts at the OAuth endpoints, for the audit log: a client, or the service account it is."""

from __future__ import annotations

from app.observability import request_audit_context
from app.services.audit import AuditContext


def client_context(client, environ=None) -> AuditContext:
    """``client`` is an authenticated client of the token endpoint (its record carries its account)."""
    account = client.account
    if account is not None:
        return request_audit_context("service_account", account.id, account.name, environ)
    return request_audit_context("client", client.client_id, client.name, environ)


def user_context(user) -> AuditContext:
    return request_audit_context("user", user.id, user.email)

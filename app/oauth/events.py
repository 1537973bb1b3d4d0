"""Who acts at the OAuth endpoints, for the audit log: a client, or the service account it is."""

from __future__ import annotations

from app.observability import request_audit_context
from app.services.audit import AuditContext
from app.services.principals import active_service_account


def client_context(client) -> AuditContext:
    account = active_service_account(client.service_account_id) if client.service_account_id else None
    if account is not None:
        return request_audit_context("service_account", account.id, account.name)
    return request_audit_context("client", client.client_id, client.name)


def user_context(user) -> AuditContext:
    return request_audit_context("user", user.id, user.email)

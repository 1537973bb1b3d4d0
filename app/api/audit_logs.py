"""GET /v1/audit-logs (SPEC §10): newest first, filters, cursor pagination. Read-only."""

from __future__ import annotations

from flask import g

from app.api import bp
from app.api.auth import require_principal
from app.api.openapi import operation
from app.api.schemas import AuditEventList, AuditLogQuery, audit_event_json, list_json, read_query
from app.services import audit as audit_log


@bp.get("/audit-logs")
@operation("List audit log entries", query=AuditLogQuery, response=AuditEventList,
           description="Newest first; an unknown query parameter is refused.")
@require_principal("admin:read", action="audit_logs.list")
def list_audit_logs():
    query = read_query(AuditLogQuery)
    filters = audit_log.AuditFilter(action=query.action, actor_id=query.actor_id, result=query.result,
                                    since=query.since, until=query.until)
    page = audit_log.list_events(org_id=g.principal.org_id, limit=query.limit,
                                 starting_after=query.starting_after, filters=filters)
    return list_json(page, audit_event_json)

"""GET /v1/audit-logs (SPEC §10): newest first, filters, cursor pagination. Read-only."""

from __future__ import annotations

from flask import g, request

from app.api import bp
from app.api.auth import require_principal
from app.api.schemas import audit_event_json, list_json, list_params, parse_time, string_filter
from app.errors import ApiError
from app.services import audit as audit_log

DEFAULT_LIMIT = 50
FILTERS = {"limit", "starting_after", "action", "actor_id", "result", "since", "until"}


@bp.get("/audit-logs")
@require_principal("admin:read", action="audit_logs.list")
def list_audit_logs():
    for name in request.args:
        if name not in FILTERS:
            raise ApiError("invalid_request", f"Unknown query parameter: {name[:60]!r}", param=name[:60])
    limit, starting_after = list_params(DEFAULT_LIMIT)
    result = string_filter("result")
    if result is not None and result not in audit_log.RESULTS:
        raise ApiError("invalid_request", "result must be 'success' or 'failure'", param="result")
    filters = audit_log.AuditFilter(
        action=string_filter("action"),
        actor_id=string_filter("actor_id"),
        result=result,
        since=parse_time(request.args.get("since"), "since"),
        until=parse_time(request.args.get("until"), "until"),
    )
    page = audit_log.list_events(org_id=g.principal.org_id, limit=limit, starting_after=starting_after,
                                 filters=filters)
    return list_json(page, audit_event_json)

"""Audit log: newest entries, filters, "load more" on the cursor, one entry's details."""

from __future__ import annotations

from flask import g, request

from app.errors import ApiError
from app.services import audit as audit_log
from app.web.dashboard import bp, end_of_day, page, render, start_of_day
from app.web.forms import AuditFilterForm

PAGE_SIZE = 50


@bp.get("/audit")
@page("admin:read")
def audit():
    form = AuditFilterForm(request.args)
    entries, has_more = [], False
    if form.validate():
        filters = audit_log.AuditFilter(
            action=form.action.data or None, actor_id=form.actor_id.data or None, result=form.result.data or None,
            since=start_of_day(form.since.data), until=end_of_day(form.until.data),
        )
        try:
            listing = audit_log.list_events(org_id=g.principal.org_id, limit=PAGE_SIZE,
                                            starting_after=request.args.get("starting_after") or None,
                                            filters=filters)
            entries, has_more = listing.items, listing.has_more
        except ApiError as error:
            form.form_errors.append(error.message)
    next_args = {k: v for k, v in request.args.items() if k != "starting_after"}
    if entries:
        next_args["starting_after"] = entries[-1].id
    return render("audit.html", form=form, entries=entries, has_more=has_more, next_args=next_args)


@bp.get("/audit/<entry_id>")
@page("admin:read")
def audit_entry(entry_id: str):
    return render("audit_entry.html", entry=audit_log.get_event(org_id=g.principal.org_id, event_id=entry_id))

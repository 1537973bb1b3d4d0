"""Settings → API Keys: list, create (shown once), edit, revoke."""

from __future__ import annotations

from flask import g, redirect, request, url_for

from app.errors import ApiError
from app.services import api_keys as key_service
from app.services import scopes as scope_rules
from app.web.dashboard import audit, bp, end_of_day, page, render, show_error
from app.web.forms import ApiKeyEditForm, ApiKeyForm, ConfirmForm, lines


@bp.get("/")
@page()
def index():
    return redirect(url_for("dashboard.api_keys" if g.principal.has_scope("admin:read")
                            else "dashboard.authorized_apps"))


@bp.get("/api-keys")
@page("admin:read")
def api_keys():
    listing = key_service.list_api_keys(org_id=g.principal.org_id, viewer=g.principal, limit=100,
                                        starting_after=request.args.get("starting_after") or None)
    return render("api_keys.html", keys=listing.items, has_more=listing.has_more, redacted=key_service.redacted)


@bp.route("/api-keys/new", methods=["GET", "POST"])
@page("admin:write")
def new_api_key():
    form = ApiKeyForm()
    if form.validate_on_submit():
        try:
            key, plaintext = key_service.create_api_key(
                org_id=g.principal.org_id, name=form.name.data, scopes=form.scopes.data,
                environment=form.environment.data, expires_at=end_of_day(form.expires_at.data),
                ip_whitelist=lines(form.ip_whitelist.data), granter=g.principal, created_by=g.principal.id,
                audit=audit(),
            )
            return render("api_key_created.html", key=key, plaintext=plaintext)
        except ApiError as error:
            show_error(form, error)
    return render("api_key_form.html", 400 if form.errors or form.form_errors else 200, form=form,
                  groups=scope_groups())


@bp.route("/api-keys/<key_id>/edit", methods=["GET", "POST"])
@page("admin:write")
def edit_api_key(key_id: str):
    key = key_service.get_api_key(org_id=g.principal.org_id, key_id=key_id, viewer=g.principal)
    form = ApiKeyEditForm(data={"name": key.name, "ip_whitelist": "\n".join(key.ip_whitelist or []),
                                "expires_at": key.expires_at.date() if key.expires_at else None})
    if form.validate_on_submit():
        try:
            key_service.update_api_key(org_id=g.principal.org_id, key_id=key.id, granter=g.principal, audit=audit(),
                                       changes={"name": form.name.data, "ip_whitelist": lines(form.ip_whitelist.data),
                                                "expires_at": end_of_day(form.expires_at.data)})
            return redirect(url_for("dashboard.api_keys"), code=303)
        except ApiError as error:
            show_error(form, error)
    return render("api_key_edit.html", 400 if form.errors or form.form_errors else 200, form=form, key=key)


@bp.route("/api-keys/<key_id>/revoke", methods=["GET", "POST"])
@page("admin:write")
def revoke_api_key(key_id: str):
    key = key_service.get_api_key(org_id=g.principal.org_id, key_id=key_id, viewer=g.principal)
    form = ConfirmForm()
    if form.validate_on_submit():
        key_service.delete_api_key(org_id=g.principal.org_id, key_id=key.id, viewer=g.principal, audit=audit())
        return redirect(url_for("dashboard.api_keys"), code=303)
    return render("confirm.html", form=form, title=f"Revoke {key.name}?",
                  message=f"{key_service.redacted(key)} stops working immediately. This cannot be undone.",
                  action=url_for("dashboard.revoke_api_key", key_id=key.id), button="Revoke key",
                  back=url_for("dashboard.api_keys"))


def scope_groups() -> list[tuple[str, list[tuple[str, str]]]]:
    """Catalogue scopes grouped by resource, for the permission checkboxes."""
    return [(resource, [(s, d) for s, d in scope_rules.CATALOGUE.items() if s.startswith(f"{resource}:")])
            for resource in scope_rules.RESOURCES]

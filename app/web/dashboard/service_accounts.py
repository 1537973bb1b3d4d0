"""Service accounts: create from a form or the seed's YAML file, edit, delete."""

from __future__ import annotations

from flask import g, redirect, request, url_for

from app.documents import MAX_YAML_BYTES, load_yaml
from app.errors import ApiError
from app.services import service_accounts as account_service
from app.web.dashboard import audit, bp, page, render, show_error
from app.web.dashboard.keys import scope_groups
from app.web.forms import ConfirmForm, ServiceAccountForm, ServiceAccountYamlForm, lines

YAML_FIELDS = {"name", "description", "scopes", "ip_whitelist"}


@bp.get("/service-accounts")
@page("admin:read")
def service_accounts():
    listing = account_service.list_service_accounts(org_id=g.principal.org_id, limit=100, starting_after=None)
    return render("service_accounts.html", accounts=listing.items)


@bp.route("/service-accounts/new", methods=["GET", "POST"])
@page("admin:write")
def new_service_account():
    form, upload = ServiceAccountForm(prefix="form"), ServiceAccountYamlForm(prefix="yaml")
    uploading = upload.file.name in request.files
    active = upload if uploading else form
    if request.method == "POST" and active.validate_on_submit():
        try:
            if uploading:
                fields = _yaml_fields(upload.file.data.read(MAX_YAML_BYTES + 1))
            else:
                fields = {"name": form.name.data, "description": form.description.data, "scopes": form.scopes.data,
                          "ip_whitelist": lines(form.ip_whitelist.data)}
            account, secret = account_service.create_service_account(
                org_id=g.principal.org_id, granter=g.principal, created_by=g.principal.id, audit=audit(), **fields
            )
            return render("service_account_created.html", account=account, secret=secret)
        except ApiError as error:
            show_error(active, error, field="file" if uploading else None)
    failed = request.method == "POST"
    return render("service_account_form.html", 400 if failed else 200, form=form, upload=upload,
                  groups=scope_groups())


@bp.route("/service-accounts/<account_id>/edit", methods=["GET", "POST"])
@page("admin:write")
def edit_service_account(account_id: str):
    account = account_service.get_service_account(org_id=g.principal.org_id, account_id=account_id)
    form = ServiceAccountForm(data={"name": account.name, "description": account.description,
                                    "scopes": account.scope.split(), "ip_whitelist": "\n".join(account.ip_whitelist)})
    if form.validate_on_submit():
        try:
            account_service.update_service_account(
                org_id=g.principal.org_id, account_id=account.id, granter=g.principal, audit=audit(),
                changes={"name": form.name.data, "description": form.description.data, "scopes": form.scopes.data,
                         "ip_whitelist": lines(form.ip_whitelist.data)})
            return redirect(url_for("dashboard.service_accounts"), code=303)
        except ApiError as error:
            show_error(form, error)
    return render("service_account_edit.html", 400 if form.errors or form.form_errors else 200, form=form,
                  account=account, groups=scope_groups())


@bp.route("/service-accounts/<account_id>/delete", methods=["GET", "POST"])
@page("admin:write")
def delete_service_account(account_id: str):
    account = account_service.get_service_account(org_id=g.principal.org_id, account_id=account_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        account_service.delete_service_account(org_id=g.principal.org_id, account_id=account.id, audit=audit())
        return redirect(url_for("dashboard.service_accounts"), code=303)
    return render("confirm.html", form=form, title=f"Delete {account.name}?",
                  message="Its API keys, client secret and tokens stop working immediately.",
                  action=url_for("dashboard.delete_service_account", account_id=account.id),
                  button="Delete service account", back=url_for("dashboard.service_accounts"))


def _yaml_fields(raw: bytes) -> dict:
    """The uploaded file, parsed as safely as the API parses YAML bodies."""
    body = load_yaml(raw)
    if not isinstance(body, dict):
        raise ApiError("invalid_request", "The file must describe one service account (a YAML mapping)", param="file")
    unknown = sorted(str(k) for k in body if k not in YAML_FIELDS)
    if unknown:
        raise ApiError("invalid_request", f"Unknown field in the file: {unknown[0][:60]!r}", param="file")
    if "name" not in body or "scopes" not in body:
        raise ApiError("invalid_request", "The file needs at least name and scopes", param="file")
    return body

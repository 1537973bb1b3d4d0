"""OAuth apps: register (secret shown once), rotate the secret, delete."""

from __future__ import annotations

from flask import g, redirect, url_for

from app.errors import ApiError
from app.services import clients as client_service
from app.web.dashboard import audit, bp, page, render, show_error
from app.web.dashboard.keys import scope_groups
from app.web.forms import ClientForm, ConfirmForm, lines


@bp.get("/apps")
@page("admin:read")
def apps():
    return render("apps.html", apps=client_service.clients_of_org(g.principal.org_id))


@bp.route("/apps/new", methods=["GET", "POST"])
@page("admin:write")
def new_app():
    form = ClientForm()
    if form.validate_on_submit():
        try:
            client, secret = client_service.create_client(
                org_id=g.principal.org_id, name=form.name.data, redirect_uris=lines(form.redirect_uris.data),
                scopes=[*form.sign_in_scopes.data, *form.scopes.data], public=form.client_type.data == "public",
                grant_types=form.grant_types.data or None,
                post_logout_redirect_uris=lines(form.post_logout_redirect_uris.data),
                created_by=g.principal.id, audit=audit(),
            )
            return render("app_created.html", client=client, secret=secret)
        except ApiError as error:
            show_error(form, error)
    return render("app_form.html", 400 if form.errors or form.form_errors else 200, form=form,
                  groups=scope_groups())


@bp.route("/apps/<client_id>/rotate", methods=["GET", "POST"])
@page("admin:write")
def rotate_app_secret(client_id: str):
    client = client_service.get_org_client(org_id=g.principal.org_id, client_id=client_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        secret = client_service.rotate_client_secret(org_id=g.principal.org_id, client_id=client.client_id,
                                                     audit=audit())
        return render("app_created.html", client=client, secret=secret, rotated=True)
    return render("confirm.html", form=form, title=f"Rotate the secret of {client.name}?",
                  message="The current secret stops working immediately; the new one is shown once.",
                  action=url_for("dashboard.rotate_app_secret", client_id=client.client_id),
                  button="Rotate secret", back=url_for("dashboard.apps"))


@bp.route("/apps/<client_id>/delete", methods=["GET", "POST"])
@page("admin:write")
def delete_app(client_id: str):
    client = client_service.get_org_client(org_id=g.principal.org_id, client_id=client_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        client_service.delete_client(org_id=g.principal.org_id, client_id=client.client_id, audit=audit())
        return redirect(url_for("dashboard.apps"), code=303)
    return render("confirm.html", form=form, title=f"Delete {client.name}?",
                  message="Its secret, refresh tokens and access tokens stop working immediately.",
                  action=url_for("dashboard.delete_app", client_id=client.client_id), button="Delete app",
                  back=url_for("dashboard.apps"))

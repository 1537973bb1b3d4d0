"""Authorized apps and the profile (every user), the organization, and its members (owners
and admins)."""

from __future__ import annotations

from flask import g, redirect, url_for

from app.errors import ApiError
from app.services import consents as consent_service
from app.services import orgs as org_service
from app.services import scopes as scope_rules
from app.web.dashboard import actor, audit, bp, page, render, show_error
from app.web.forms import ConfirmForm, MemberForm, ProfileForm, RoleForm


@bp.get("/authorized-apps")
@page()
def authorized_apps():
    return render("authorized_apps.html", grants=consent_service.consents_of_user(g.principal.id),
                  describe=scope_rules.describe, form=ConfirmForm())


@bp.route("/authorized-apps/<client_id>/revoke", methods=["GET", "POST"])
@page()
def revoke_authorized_app(client_id: str):
    form = ConfirmForm()
    if form.validate_on_submit():
        consent_service.revoke_consent(user_id=g.principal.id, client_id=client_id, org_id=g.principal.org_id,
                                       audit=audit())
        return redirect(url_for("dashboard.authorized_apps"), code=303)
    return render("confirm.html", form=form, title="Revoke this app's access?",
                  message="The app loses every token it holds for you and must ask again.",
                  action=url_for("dashboard.revoke_authorized_app", client_id=client_id), button="Revoke access",
                  back=url_for("dashboard.authorized_apps"))


@bp.route("/profile", methods=["GET", "POST"])
@page()
def profile():
    user = actor()
    form = ProfileForm(data={"name": user.name})
    if form.validate_on_submit():
        try:
            org_service.set_user_name(user=user, name=form.name.data, audit=audit())
            return redirect(url_for("dashboard.profile"), code=303)
        except ApiError as error:
            show_error(form, error)
    return render("profile.html", 400 if form.errors or form.form_errors else 200, form=form, person=user)


@bp.get("/organization")
@page("admin:read")
def organization():
    org = org_service.get_org(g.principal.org_id)
    return render("organization.html", org=org, quota=org_service.quota_of_org(org.id),
                  calls_today=org_service.calls_today(org.id))


@bp.route("/members", methods=["GET", "POST"])
@page("admin:write")
def members():
    form = MemberForm()
    if form.validate_on_submit():
        try:
            org_service.add_member(actor=actor(), email=form.email.data, password=form.password.data,
                                   role=form.role.data, name=form.name.data, audit=audit())
            return redirect(url_for("dashboard.members"), code=303)
        except ApiError as error:
            show_error(form, error)
    failed = bool(form.errors or form.form_errors)
    people = org_service.members_of(g.principal.org_id)
    role_forms = {m.id: RoleForm(formdata=None, data={"role": m.role}) for m in people}
    return render("members.html", 400 if failed else 200, form=form, members=people, role_forms=role_forms)


@bp.post("/members/<user_id>/role")
@page("admin:write")
def change_member_role(user_id: str):
    form = RoleForm()
    if form.validate_on_submit():
        org_service.change_role(actor=actor(), user_id=user_id, role=form.role.data, audit=audit())
    return redirect(url_for("dashboard.members"), code=303)


@bp.route("/members/<user_id>/remove", methods=["GET", "POST"])
@page("admin:write")
def remove_member(user_id: str):
    member = org_service.get_member(org_id=g.principal.org_id, user_id=user_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        org_service.remove_member(actor=actor(), user_id=member.id, audit=audit())
        return redirect(url_for("dashboard.members"), code=303)
    return render("confirm.html", form=form, title=f"Remove {member.email}?",
                  message="They are signed out everywhere and their tokens stop working.",
                  action=url_for("dashboard.remove_member", user_id=member.id), button="Remove member",
                  back=url_for("dashboard.members"))

"""The page where a person approves a device (RFC 8628 §3.3): sign in, type the code the
device shows, see the app and its scopes, allow or deny."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from app.extensions import db
from app.models import DeviceAuthorization, OAuthClient, Organization, User
from app.oauth.events import user_context
from app.security.rate_limits import LimiterUnavailable, limiter
from app.services import devices
from app.services import scopes as scope_rules
from app.web.forms import ConfirmForm
from app.web.session import current_sign_in, current_user

bp = Blueprint("device", __name__)

NOT_FOUND = "That code is not valid, or it has expired or been used. Check the code on your device."
THROTTLED = "Too many codes tried. Wait a minute and try again."
UNAVAILABLE = "Device sign-in is temporarily unavailable. Try again shortly."


@bp.route("/device", methods=["GET", "POST"])
def device():
    user = current_user()
    if user is None:
        return redirect(url_for("auth.login", next=request.full_path))
    form = ConfirmForm()
    typed = request.values.get("user_code", "")[:32]

    def code_page(error: str | None = None, status: int = 200):
        return render_template("device.html", form=form, user_code=typed, error=error), status

    if request.method == "GET":
        return code_page()
    if not form.validate_on_submit():
        return code_page("The form expired; reload the page and try again.", 400)
    try:
        allowed = limiter().check_user_code(address=request.remote_addr, user_id=user.id)
    except LimiterUnavailable:  # fail closed, as sign-in does: the limit is what stops guessing
        return code_page(UNAVAILABLE, 503)
    if not allowed:
        return code_page(THROTTLED, 429)
    code = devices.normalize_user_code(typed)
    pending = devices.pending_by_user_code(code) if code else None
    client = db.session.get(OAuthClient, pending.client_id) if pending else None
    if pending is None or client is None or client.deleted_at is not None:
        return code_page(NOT_FOUND, 400)
    if client.org_id != user.org_id:
        return code_page("This device's app belongs to another organization.", 403)
    granted = scope_rules.bound_for_role(pending.scope, user.role)
    decision = request.form.get("decision")
    if decision in ("allow", "deny"):
        return _decide(pending, user, client, granted, approved=decision == "allow")
    return _render_consent(pending, client, user, granted)


def _decide(pending: DeviceAuthorization, user: User, client: OAuthClient, granted: str, *, approved: bool):
    if approved and not granted:
        approved = False  # nothing this user could delegate
    sign_in = current_sign_in()
    if not devices.decide(pending, user_id=user.id, approved=approved, scope=granted,
                          auth_time=sign_in.auth_time if sign_in else None, sid=sign_in.sid if sign_in else None,
                          audit=user_context(user)):
        return render_template("device.html", form=ConfirmForm(), user_code="", error=NOT_FOUND), 409
    return render_template("device_done.html", client=client, approved=approved)


def _render_consent(pending: DeviceAuthorization, client: OAuthClient, user: User, granted: str):
    org = db.session.get(Organization, client.org_id)
    withheld = sorted(set(pending.scope.split()) - set(granted.split()))
    return render_template(
        "consent.html",
        client=client,
        org=org,
        registered_by=db.session.get(User, client.created_by) if client.created_by else None,
        user=user,
        scopes=scope_rules.describe(granted.split()),
        withheld=scope_rules.describe(withheld),
        form=ConfirmForm(),
        action=url_for("device.device"),
        user_code=devices.shown(pending.user_code),
    )

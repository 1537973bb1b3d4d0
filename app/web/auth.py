"""Sign in and sign out (SPEC §5)."""

from __future__ import annotations

import logging

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Blueprint, redirect, render_template, request, url_for

from app import metrics
from app.extensions import csrf
from app.oauth.events import user_context
from app.oauth.server import authorization_server
from app.security.passwords import PasswordCheckBusy
from app.security.rate_limits import LimiterUnavailable, limiter
from app.services import audit as audit_log
from app.services import orgs as org_service
from app.web.forms import ConfirmForm, LoginForm
from app.web.session import current_user, safe_next, sign_in, sign_out

bp = Blueprint("auth", __name__)
log = logging.getLogger("sensei.auth")

INVALID_CREDENTIALS = "Invalid email or password."
THROTTLED = "Too many sign-in attempts. Wait a minute and try again."
UNAVAILABLE = "Sign-in is temporarily unavailable. Try again shortly."


@bp.get("/")
def home():
    user = current_user()
    if user is None:
        return redirect(url_for("auth.login"))
    org = org_service.get_org(user.org_id)
    return render_template("home.html", user=user, org=org, form=ConfirmForm())


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next"))
        hint = request.args.get("login_hint", "")
        if hint and len(hint) <= 254 and "@" in hint:  # OpenID Connect's login_hint: an email to prefill
            form.email.data = hint
        return render_template("login.html", form=form)
    if not form.validate_on_submit():
        return render_template("login.html", form=form, error=_form_error(form)), 400
    email = form.email.data or ""
    try:
        allowed = limiter().check_login(address=request.remote_addr, email=email)
    except LimiterUnavailable:  # fail closed: the limit is what stops password guessing
        return render_template("login.html", form=form, error=UNAVAILABLE), 503
    if not allowed:
        return render_template("login.html", form=form, error=THROTTLED), 429
    try:
        user = org_service.authenticate_user(email=email, password=form.password.data or "")
    except PasswordCheckBusy:
        return render_template("login.html", form=form, error=UNAVAILABLE), 503
    if user is None:
        metrics.authentication_failed("login")
        known = org_service.user_by_email(email)  # a failure is recorded in the account's org
        if known is not None:
            audit_log.record_now(user_context(known), org_id=known.org_id, action="auth.login.failure",
                                 resource=known.id, result="failure")
        else:
            log.warning("sign-in failed for an unknown account from %s", request.remote_addr)
        return render_template("login.html", form=form, error=INVALID_CREDENTIALS), 401
    sign_in(user)
    audit_log.record_now(user_context(user), org_id=user.org_id, action="auth.login.success", resource=user.id)
    return redirect(safe_next(form.next.data), code=303)


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    form = ConfirmForm()
    if request.method == "POST" and form.validate_on_submit():
        user = current_user()
        if user is not None:
            audit_log.record_now(user_context(user), org_id=user.org_id, action="auth.logout", resource=user.id)
        sign_out()
        return redirect(url_for("auth.login"), code=303)
    if request.method == "POST":
        return render_template("logout.html", form=form, error="The form expired; try again."), 400
    return render_template("logout.html", form=form)


@bp.route("/oauth/logout", methods=["GET", "POST"])
@csrf.exempt  # the relying party's request (OpenID Connect RP-Initiated Logout 1.0)
def end_session():
    """Sign out at an app's request. With a valid ``id_token_hint`` of the signed-in user the
    session ends at once and the browser goes back to ``post_logout_redirect_uri`` (only if
    registered exactly for the token's client) with ``state``; otherwise the person confirms
    on the sign-out page and nobody is redirected anywhere."""
    server = authorization_server()
    try:
        ended = server.validate_endpoint_request("end_session")
    except OAuth2Error:
        ended = None  # a hint that is not an ID token of ours
    claims = ended.id_token_claims if ended is not None else None
    user = current_user()
    if claims is None or (user is not None and claims.get("sub") != user.id):
        return redirect(url_for("auth.logout"), code=303)
    if user is not None:
        audit_log.record_now(user_context(user), org_id=user.org_id, action="oidc.logout",
                             resource=ended.client.client_id if ended.client else user.id)
    sign_out()
    return server.create_endpoint_response("end_session", ended) or redirect(url_for("auth.login"), code=303)


def _form_error(form: LoginForm) -> str:
    if "csrf_token" in form.errors:
        return "The form expired; reload the page and try again."
    return INVALID_CREDENTIALS

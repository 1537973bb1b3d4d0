"""The authorization endpoint and its consent page (RFC 6749 §3.1, §4.1.1-4.1.2.1).

Client and redirect URI are checked before anything else: while either is unknown the
browser gets an error page, never a redirect (RFC 6749 §4.1.2.1, RFC 9700 §4.11). Every
redirect back to the app carries ``iss`` (RFC 9207; added by the authorization server).

OpenID Connect's parameters: ``prompt`` (none, login, consent), ``max_age``, ``login_hint``
and ``nonce`` (kept with the code for the ID token).
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Blueprint, redirect, render_template, request, url_for

from app.extensions import db
from app.models import Organization, User
from app.oauth.clients import query_client
from app.oauth.events import user_context
from app.oauth.server import authorization_server
from app.oauth.views import parameter_problem
from app.services import audit as audit_log
from app.services import consents as consent_service
from app.services import scopes as scope_rules
from app.web.forms import ConfirmForm
from app.web.session import current_sign_in, current_user

bp = Blueprint("consent", __name__)


def _error_page(message: str, status: int = 400):
    return render_template("error.html", title="This authorization request is invalid", message=message), status


def _redirect_error(redirect_uri: str, error: str, description: str):
    """RFC 6749 §4.1.2.1: once client and redirect URI are known good, errors go back to the app."""
    failure = OAuth2Error(error=error, description=description, redirect_uri=redirect_uri,
                          state=request.args.get("state"))
    return authorization_server().handle_error_response(None, failure)


@bp.route("/oauth/authorize", methods=["GET", "POST"])
def authorize():
    problem = parameter_problem(request.args)
    if problem:
        return _error_page(problem)
    client = query_client(request.args.get("client_id"))
    if client is None:
        return _error_page("Unknown client_id: this application is not registered.")
    redirect_uri = request.args.get("redirect_uri")
    if not redirect_uri or not client.check_redirect_uri(redirect_uri):
        return _error_page("The redirect_uri is missing or is not registered exactly for this application.")

    server = authorization_server()
    if request.args.get("response_type") != "code":
        # Answered here: Authlib would copy the untrusted value into its error description.
        return _redirect_error(redirect_uri, "unsupported_response_type", "Only response_type=code is supported.")
    prompts = set((request.args.get("prompt") or "").split())
    if "none" in prompts and len(prompts) > 1:
        return _redirect_error(redirect_uri, "invalid_request", "prompt=none cannot be combined with other values.")
    max_age = request.args.get("max_age")
    if max_age is not None and not (max_age.isascii() and max_age.isdigit() and len(max_age) <= 10):
        return _redirect_error(redirect_uri, "invalid_request", "max_age must be a number of seconds.")
    user = current_user()
    try:
        grant = server.get_consent_grant(end_user=user)
    except OAuth2Error as error:
        return server.handle_error_response(None, error)

    sign_in = current_sign_in()
    stale = sign_in is not None and max_age is not None and time.time() - sign_in.auth_time.timestamp() > int(max_age)
    if user is None or "login" in prompts or stale:
        if "none" in prompts:
            return _redirect_error(redirect_uri, "login_required", "The user must sign in.")
        return _sign_in_first()
    if user.org_id != client.org_id:
        return _redirect_error(redirect_uri, "access_denied", "This application belongs to another organization.")
    granted = scope_rules.bound_for_role(grant.request.scope, user.role)
    if not granted:
        return _redirect_error(redirect_uri, "invalid_scope", "None of the requested scopes is available to this user.")

    if request.method == "POST":
        return _decide(server, grant, user, granted)
    if "consent" not in prompts and consent_service.covers(user_id=user.id, client_id=client.client_id,
                                                            scope=granted):
        return server.create_authorization_response(grant=grant, grant_user=user)
    if "none" in prompts:
        return _redirect_error(redirect_uri, "consent_required", "The user has not approved this application.")
    return _render_consent(client, user, grant.request.scope, granted)


def _sign_in_first():
    """To the sign-in page, then back here. ``prompt=login`` and ``max_age`` are what sent the
    browser there: the way back drops them (the sign-in that follows satisfies both, and
    ``auth_time`` will say when it was), so that it does not loop."""
    prompts = [p for p in (request.args.get("prompt") or "").split() if p != "login"]
    args = [(k, v) for k, v in request.args.items(multi=True) if k not in ("prompt", "max_age")]
    if prompts:
        args.append(("prompt", " ".join(prompts)))
    back = f"{request.path}?{urlencode(args)}"
    hint = request.args.get("login_hint")
    return redirect(url_for("auth.login", next=back, login_hint=hint or None))


def _decide(server, grant, user: User, granted: str):
    ConfirmForm().validate_on_submit()  # CSRFProtect has already refused a bad token
    decision = request.form.get("decision")
    client = grant.client
    if decision == "allow":
        consent_service.record_consent(user_id=user.id, client_id=client.client_id, org_id=client.org_id,
                                       scope=granted, audit=user_context(user))
        return server.create_authorization_response(grant=grant, grant_user=user)
    if decision == "deny":
        audit_log.record_now(user_context(user), org_id=client.org_id, action="oauth.consent.deny",
                             resource=client.client_id)
        return server.create_authorization_response(grant=grant, grant_user=None)
    return _error_page("Choose Allow or Deny.")


def _render_consent(client, user: User, requested: str, granted: str):
    org = db.session.get(Organization, client.org_id)
    registered_by = db.session.get(User, client.created_by) if client.created_by else None
    withheld = sorted(set(requested.split()) - set(granted.split()))
    return render_template(
        "consent.html",
        client=client,
        org=org,
        registered_by=registered_by,
        user=user,
        scopes=scope_rules.describe(granted.split()),
        withheld=scope_rules.describe(withheld),
        form=ConfirmForm(),
        action=request.full_path,
    )

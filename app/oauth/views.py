"""HTTP endpoints of the authorization server that are not pages: token, revoke,
introspect (RFC 6749 §3.2, RFC 7009, RFC 7662), UserInfo (OpenID Connect Core §5.3) and
metadata (RFC 8414, OpenID Connect Discovery 1.0, RFC 7517)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from werkzeug.datastructures import MultiDict

from app import metrics
from app.errors import oauth_error
from app.extensions import db
from app.models import User
from app.oauth.grants import RateLimitedError
from app.oauth.oidc import CLAIMS, user_claims
from app.oauth.server import authorization_server
from app.oauth.tokens import decode_access_token, keyring, standing_of
from app.observability import principal_audit_context
from app.security import rate_limits
from app.services import audit as audit_log
from app.services import scopes as scope_rules
from app.services.clients import DEVICE_CODE

bp = Blueprint("oauth", __name__)

MAX_PARAM_LENGTH = 4096


def parameter_problem(values: MultiDict) -> str | None:
    """RFC 6749 §3.1/§3.2: no parameter twice; and nothing we could not store or look up."""
    for key in values.keys():
        items = values.getlist(key)
        if len(items) > 1:
            return f"Parameter '{key[:40]}' must not be repeated."
        if len(items[0]) > MAX_PARAM_LENGTH or "\x00" in items[0]:
            return f"Parameter '{key[:40]}' is too long or contains a NUL byte."
    return None


@bp.before_request
def default_to_form_encoding() -> None:
    """A POST without Content-Type is read as form-urlencoded (what `curl -d` means)."""
    if request.method == "POST" and not request.environ.get("CONTENT_TYPE"):
        request.environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"


def _checked_form():
    problem = parameter_problem(request.form) or parameter_problem(request.args)
    if problem:
        return oauth_error("invalid_request", problem)
    return None


@bp.post("/oauth/token")
def token():
    refused = _checked_form()
    if refused:
        return refused
    if not request.form.get("grant_type"):
        return oauth_error("invalid_request", "Missing 'grant_type': send application/x-www-form-urlencoded.")
    return authorization_server().create_token_response()


@bp.post("/oauth/device_authorization")
def device_authorization():
    return _checked_form() or authorization_server().create_endpoint_response("device_authorization")


@bp.post("/oauth/revoke")
def revoke():
    return _checked_form() or authorization_server().create_endpoint_response("revocation")


@bp.post("/oauth/introspect")
def introspect():
    return _checked_form() or authorization_server().create_endpoint_response("introspection")


def _bearer_challenge(status: int, error: str | None, description: str):
    """RFC 6750 §3: the Bearer challenge (no error code when no credential was sent)."""
    challenge = 'Bearer realm="sensei"'
    if error:
        challenge += f', error="{error}", error_description="{description}"'
        if error == "insufficient_scope":
            challenge += ', scope="openid"'
    response = oauth_error(error or "invalid_request", description, status)
    response.headers["WWW-Authenticate"] = challenge
    return response


@bp.route("/oauth/userinfo", methods=["GET", "POST"])
def userinfo():
    """The signed-in person's claims for an access token granted ``openid``."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return _bearer_challenge(401, None, "Send the access token: Authorization: Bearer <token>")
    claims = decode_access_token(credential)
    principal, hit = standing_of(claims, count=rate_limits.count) if claims else (None, None)
    if principal is None or hit is None:
        metrics.authentication_failed("oauth_userinfo")
        if not rate_limits.enforce_anonymous(request.remote_addr).allowed:
            raise RateLimitedError()
        return _bearer_challenge(401, "invalid_token", "The access token is invalid, expired or revoked")
    if not rate_limits.remember(hit).decision.allowed:
        raise RateLimitedError()
    if principal.type != "user" or not scope_rules.is_openid(claims["scope"]):
        return _bearer_challenge(403, "insufficient_scope", "The access token was not granted the openid scope")
    user = db.session.get(User, principal.id)
    audit_log.record_now(principal_audit_context(principal), org_id=principal.org_id, action="oidc.userinfo",
                         resource=principal.id)
    response = jsonify(dict(user_claims(user, claims["scope"])))
    response.headers["Cache-Control"] = "no-store"
    return response


def server_metadata() -> dict:
    """RFC 8414's document; OpenID Connect Discovery's is this and more."""
    settings = current_app.config["SETTINGS"]
    issuer = settings.ISSUER
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "device_authorization_endpoint": f"{issuer}/oauth/device_authorization",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "userinfo_endpoint": f"{issuer}/oauth/userinfo",
        "end_session_endpoint": f"{issuer}/oauth/logout",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "scopes_supported": [*scope_rules.PROTOCOL, *scope_rules.CATALOGUE],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token", DEVICE_CODE],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "service_documentation": settings.DOCS_URL,
    }


def _document(payload: dict):
    response = jsonify(payload)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/.well-known/oauth-authorization-server")
def metadata():
    return _document(server_metadata())


@bp.get("/.well-known/openid-configuration")
def openid_configuration():
    return _document({
        **server_metadata(),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": list(CLAIMS),
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    })


@bp.get("/.well-known/jwks.json")
def jwks():
    response = jsonify(keyring().jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response

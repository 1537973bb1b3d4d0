"""HTTP endpoints of the authorization server that are not pages: token, revoke,
introspect (RFC 6749 §3.2, RFC 7009, RFC 7662) and metadata (RFC 8414, RFC 7517)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from werkzeug.datastructures import MultiDict

from app.errors import oauth_error
from app.oauth.server import authorization_server
from app.oauth.tokens import keyring
from app.services import scopes as scope_rules

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


@bp.post("/oauth/revoke")
def revoke():
    return _checked_form() or authorization_server().create_endpoint_response("revocation")


@bp.post("/oauth/introspect")
def introspect():
    return _checked_form() or authorization_server().create_endpoint_response("introspection")


@bp.get("/.well-known/oauth-authorization-server")
def metadata():
    settings = current_app.config["SETTINGS"]
    issuer = settings.ISSUER
    response = jsonify(
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/oauth/authorize",
            "token_endpoint": f"{issuer}/oauth/token",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "introspection_endpoint": f"{issuer}/oauth/introspect",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "scopes_supported": list(scope_rules.CATALOGUE),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "service_documentation": settings.DOCS_URL,
        }
    )
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/.well-known/jwks.json")
def jwks():
    response = jsonify(keyring().jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response

"""The Authlib AuthorizationServer, configured once: grants, client auth, endpoints, tokens."""

from __future__ import annotations

import os

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidScopeError
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import Flask, current_app
from flask import request as flask_request

from app import metrics
from app.oauth import client_auth
from app.oauth.clients import query_client
from app.oauth.device import DEVICE_CODE, DeviceAuthorizationEndpoint, DeviceCodeGrant
from app.oauth.endpoints import Introspection, Revocation
from app.oauth.events import client_context
from app.oauth.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RateLimitedError,
    RefreshTokenGrant,
    client_credentials_problem,
)
from app.oauth.oidc import CodeIDToken, EndSessionEndpoint, IDToken
from app.oauth.pkce import StrictCodeChallenge
from app.oauth.tokens import AccessTokenGenerator
from app.security import rate_limits
from app.services import audit as audit_log
from app.services import scopes as scope_rules
from app.services import tokens as token_service


class LeanOAuth2Request(FlaskOAuth2Request):
    """Authlib's request over Flask's, made cheaply: no full-URL reconstruction (Werkzeug's
    IRI decoding) — Authlib reads the URL only for its transport check, which our HTTPS
    mode replaces (see ``init_app``) — and no walk over the WSGI environ to count headers."""

    def __init__(self, request) -> None:
        environ = request.environ
        OAuth2Request.__init__(self, method=request.method,
                               uri=f"{environ['wsgi.url_scheme']}://{environ.get('HTTP_HOST', '')}{request.path}")
        self.headers = request.headers  # set here: Authlib's `headers or {}` would count them all
        self._request = request
        self.payload = FlaskOAuth2Payload(request)


class Issuer(IssuerParameter):
    """RFC 9207: ``iss`` on every authorization response, success or error (the mix-up
    defence). Applied in ``handle_response``, the one place every redirect passes."""

    def get_issuer(self) -> str:
        return current_app.config["SETTINGS"].ISSUER


class SenseiAuthorizationServer(AuthorizationServer):
    issuer_parameter = Issuer()

    def init_app(self, app: Flask, query_client=query_client, save_token=None) -> None:  # type: ignore[override]
        # Transport security is enforced by our own middleware (HTTPS mode, SPEC §11), which
        # also understands trusted proxies; Authlib's URL-based check would turn into a 500.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
        super().init_app(app, query_client=query_client, save_token=save_token_response)
        settings = app.config["SETTINGS"]
        self.register_token_generator(
            "default",
            AccessTokenGenerator(
                issuer=settings.ISSUER, audience=settings.AUDIENCE, access_ttl=settings.ACCESS_TOKEN_TTL
            ),
        )
        self.register_client_auth_method("client_secret_basic", client_auth.authenticate_client_secret_basic)
        self.register_client_auth_method("client_secret_post", client_auth.authenticate_client_secret_post)
        self.register_client_auth_method("none", client_auth.authenticate_none)
        self.register_grant(AuthorizationCodeGrant, [StrictCodeChallenge(), CodeIDToken()])
        self.register_grant(RefreshTokenGrant, [IDToken()])
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(DeviceCodeGrant, [IDToken()])
        self.register_endpoint(DeviceAuthorizationEndpoint)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)
        self.register_endpoint(EndSessionEndpoint)

    def create_oauth2_request(self, request) -> LeanOAuth2Request:
        # The request itself, not Flask's proxy: Authlib reads it many times a request.
        return LeanOAuth2Request(flask_request._get_current_object())  # type: ignore[attr-defined]

    def load_config(self, config) -> None:
        # Token generation is ours (JWTs); skip Authlib's bearer generator set-up.
        self.scopes_supported = list(scope_rules.CATALOGUE)

    def validate_requested_scope(self, scope: str | None) -> None:
        """Every requested scope must be in the catalogue or be one of its wildcards."""
        try:
            scope_rules.parse(scope, protocol=True)
        except scope_rules.ScopeError:
            raise InvalidScopeError("Unknown scope requested.") from None

    def authenticate_client(self, request, methods, endpoint="token"):
        """Authlib's client authentication, then the client's rate limit (SPEC §8); failed
        attempts count against the caller's address."""
        try:
            client = super().authenticate_client(request, methods, endpoint)
        except InvalidClientError as error:
            metrics.authentication_failed("oauth_client")
            if not rate_limits.enforce_anonymous(flask_request.remote_addr).allowed:
                raise RateLimitedError() from None
            # Authlib's message lists our method names; say what went wrong instead.
            error.description = "Client authentication failed: unknown client or wrong credentials."
            raise
        if client.hit is None or not client.hit.decision.allowed:  # counted by clients.authenticate
            raise RateLimitedError()
        return client

    def handle_response(self, status_code, payload, headers):
        # Authlib's own encodes with the standard library; ours is Flask's (orjson).
        if isinstance(payload, dict):
            payload = current_app.json.dumps(payload)
        response = current_app.response_class(payload, status=status_code, headers=headers)
        if response.location and flask_request.path == "/oauth/authorize":  # an authorization response
            self.issuer_parameter.add_issuer_parameter(self, response)
        return response

    def send_signal(self, name, *args, **kwargs) -> None:
        pass  # no Flask signal receivers; audit events are recorded by the services


def save_token_response(token: dict, request) -> None:
    """Persist what the token response carries (Authlib calls this before responding)."""
    issued = token.pop("_issued")
    grant_type = request.payload.grant_type
    if grant_type == "client_credentials":
        record_client_token(request.client, issued)
        return
    metrics.token_issued(grant_type)
    audit = client_context(request.client)
    refresh_ttl = current_app.config["SETTINGS"].REFRESH_TOKEN_TTL
    if grant_type in ("authorization_code", DEVICE_CODE):
        sign_in = request.authorization_code or request.credential  # what the person approved
        token_service.record_issue(
            access=issued,
            refresh_token=token.get("refresh_token"),
            org_id=request.client.org_id,
            client_id=request.client.client_id,
            user_id=request.user.id,
            scope=token["scope"],
            refresh_ttl=refresh_ttl,
            code=request.authorization_code,
            audit=audit,
            auth_time=sign_in.auth_time,
            sid=sign_in.sid,
        )
    elif grant_type == "refresh_token":
        previous = request.refresh_token
        token_service.record_issue(
            access=issued,
            refresh_token=token.get("refresh_token"),
            org_id=previous.org_id,
            client_id=previous.client_id,
            user_id=previous.user_id,
            scope=previous.scope,  # RFC 6749 §6: the new refresh token keeps the original scope
            refresh_ttl=refresh_ttl,
            family_id=previous.family_id,
            audit=audit,
            action="oauth.token.refresh",
            auth_time=previous.auth_time,
            sid=previous.sid,
        )


def record_client_token(client, issued: token_service.IssuedAccessToken, environ=None, app=None) -> None:
    """A client-credentials token is a self-contained JWT: nothing to store but its audit entry."""
    metrics.token_issued("client_credentials")
    audit_log.record_now(client_context(client, environ), app=app, org_id=client.org_id,
                         action="oauth.token.issue", resource=issued.jti)


def client_token(client, scope: str | None, address: str | None
                 ) -> tuple[dict, token_service.IssuedAccessToken] | None:
    """A client-credentials token for an authenticated ``client`` (``Client``) as the grant
    makes it, not yet recorded (``record_client_token``, when it is sent), or None when the
    grant would refuse (the hot path's case: the grant then answers the request)."""
    server = authorization_server()
    if not client.check_grant_type(ClientCredentialsGrant.GRANT_TYPE) or client.is_public:
        return None
    try:
        server.validate_requested_scope(scope)
    except InvalidScopeError:
        return None
    if client_credentials_problem(client, scope, address) is not None:
        return None
    token = server.generate_token(grant_type=ClientCredentialsGrant.GRANT_TYPE, client=client, scope=scope,
                                  include_refresh_token=False)
    return token, token.pop("_issued")


def init_oauth(app: Flask) -> None:
    """One AuthorizationServer per app (tests build several apps in one process)."""
    server = SenseiAuthorizationServer()
    server.init_app(app)
    app.extensions["sensei.oauth"] = server


def authorization_server() -> SenseiAuthorizationServer:
    return current_app.extensions["sensei.oauth"]

"""Grant types of RFC 6749 on Authlib, with atomic single use and refresh rotation."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
)
from flask import current_app
from flask import request as flask_request

from app.extensions import db
from app.models import User
from app.oauth.events import client_context
from app.security import ip_rules
from app.services import audit as audit_log
from app.services import scopes as scope_rules
from app.services import tokens as token_service
from app.web.session import current_sign_in

ALL_CLIENT_AUTH = ["client_secret_basic", "client_secret_post", "none"]
CONFIDENTIAL_CLIENT_AUTH = ["client_secret_basic", "client_secret_post"]


def _settings():
    return current_app.config["SETTINGS"]


def active_user(user_id: str | None) -> User | None:
    user = db.session.get(User, user_id) if user_id else None
    return user if user is not None and user.deleted_at is None else None


class AddressNotAllowedError(OAuth2Error):
    """403 when an allow-list refuses the caller's address (SPEC §7)."""

    error = "access_denied"
    status_code = 403
    description = "Requests from this address are not allowed for this credential."


class RateLimitedError(OAuth2Error):
    """429 in RFC 6749 shape; Retry-After and X-RateLimit-* are added to every response."""

    error = "rate_limited"
    status_code = 429
    description = "Rate limit exceeded; retry after the number of seconds in Retry-After."


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    """RFC 6749 §4.1 with codes stored as digests and redeemed by a conditional UPDATE."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_CLIENT_AUTH

    @staticmethod
    def validate_authorization_redirect_uri(request, client):
        # Exact match, always required; never echo the untrusted URI into the message.
        redirect_uri = request.payload.redirect_uri
        if not redirect_uri:
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        if not client.check_redirect_uri(redirect_uri):
            raise InvalidRequestError("The redirect_uri is not registered for this client.")
        return redirect_uri

    def save_authorization_code(self, code, request):
        payload = request.payload.data
        challenge = payload.get("code_challenge")
        sign_in = current_sign_in()  # the browser's, whose user approved this code
        token_service.save_authorization_code(
            code=code,
            org_id=request.client.org_id,
            client_id=request.client.client_id,
            user_id=request.user.id,
            redirect_uri=request.payload.redirect_uri,
            # The user delegates only what their role holds (SPEC §2).
            scope=scope_rules.bound_for_role(request.scope, request.user.role),
            code_challenge=challenge,
            code_challenge_method="S256" if challenge else None,
            ttl_seconds=_settings().AUTHORIZATION_CODE_TTL,
            nonce=payload.get("nonce"),
            auth_time=sign_in.auth_time if sign_in else None,
            sid=sign_in.sid if sign_in else None,
        )

    def generate_authorization_code(self):
        return token_service.new_authorization_code()

    def query_authorization_code(self, code, client):
        return token_service.find_authorization_code(code, client.client_id, client_context(client))

    def authenticate_user(self, authorization_code):
        # Runs after every check (client, redirect URI, PKCE): this is where the code is spent.
        if not token_service.claim_authorization_code(authorization_code, client_context(self.request.client)):
            raise InvalidGrantError("The authorization code has already been used.")
        user = active_user(authorization_code.user_id)
        if user is None:
            raise InvalidGrantError("The user of this code no longer exists.")
        return user

    def delete_authorization_code(self, authorization_code):
        pass  # kept (marked used) so that a replay can be detected; `sensei prune` removes it


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """RFC 6749 §6 with rotation on every use and reuse detection (RFC 9700 §4.14.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_CLIENT_AUTH
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        return token_service.find_refresh_token(refresh_token, client_context(self.request.client))

    def _validate_token_scope(self, token):
        scope = self.request.payload.scope
        if not scope:
            return
        try:
            requested = scope_rules.expand(scope_rules.parse(scope, protocol=True))
        except scope_rules.ScopeError:
            raise InvalidScopeError("Unknown scope requested.") from None
        if not requested or not requested <= frozenset(token.get_scope().split()):
            raise InvalidScopeError("A refresh may narrow the scope, never widen it.")

    def authenticate_user(self, refresh_token):
        if not token_service.claim_refresh_token(refresh_token, client_context(self.request.client)):
            raise InvalidGrantError("The refresh token has already been used.")
        user = active_user(refresh_token.user_id)
        if user is None:
            raise InvalidGrantError("The user of this grant no longer exists.")
        return user

    def revoke_old_credential(self, refresh_token):
        pass  # already marked used by authenticate_user, atomically


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    """RFC 6749 §4.4 for confidential clients; the scope is bounded by the client's."""

    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_CLIENT_AUTH

    def validate_token_request(self):
        super().validate_token_request()
        client = self.request.client
        problem = client_credentials_problem(client, self.request.payload.scope, flask_request.remote_addr)
        if isinstance(problem, AddressNotAllowedError):
            audit_log.record_now(client_context(client), org_id=client.org_id, action="oauth.token.issue",
                                 result="failure")
        if problem is not None:
            raise problem


def client_credentials_problem(client, requested: str | None, address: str | None) -> OAuth2Error | None:
    """Why an authenticated client may not have a client-credentials token of ``requested``
    scope from ``address`` (None: it may)."""
    if requested and set(requested.split()) & scope_rules.PROTOCOL.keys():
        return InvalidScopeError("openid, profile and email sign a person in: not with client_credentials.")
    if client.get_allowed_scope(requested) is None:
        return InvalidScopeError("The client may not request this scope.")
    if client.service_account_id:
        account = client.account  # a client of a deleted account does not authenticate at all
        if account is None:
            return InvalidClientError(status_code=401, description="The service account has been deleted.")
        if not ip_rules.allows(account.ip_whitelist, address):
            return AddressNotAllowedError()
    return None

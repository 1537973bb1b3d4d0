"""Authlib's ClientMixin over our OAuthClient model (RFC 6749 §2)."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin

from app.models import OAuthClient
from app.services import clients as client_service
from app.services import scopes as scope_rules

_TOKEN_METHODS_CONFIDENTIAL = {"client_secret_basic", "client_secret_post"}


class Client(ClientMixin):
    def __init__(self, model: OAuthClient) -> None:
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def get_client_id(self) -> str:
        return self.model.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # the redirect_uri parameter is always required

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scope if the client may hold all of it (None means invalid_scope)."""
        allowed = scope_rules.expand(self.model.scope.split())
        if not scope:
            return scope_rules.to_string(allowed)
        try:
            requested = scope_rules.expand(scope_rules.parse(scope))
        except scope_rules.ScopeError:
            return None
        if not requested or not requested <= allowed:
            return None
        return scope_rules.to_string(requested)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.model.redirect_uris  # exact string match, RFC 9700 §4.1.3

    def check_client_secret(self, client_secret: str) -> bool:
        return client_service.check_client_secret(self.model, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.model.is_public:
            return method == "none" and endpoint in ("token", "revocation")
        return method in _TOKEN_METHODS_CONFIDENTIAL

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.check_grant_type("authorization_code")

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.model.grant_types.split()


def query_client(client_id: str | None) -> Client | None:
    model = client_service.get_active_client(client_id)
    return Client(model) if model is not None else None

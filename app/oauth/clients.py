"""Authlib's ClientMixin over our OAuthClient model (RFC 6749 §2)."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin

from app.models import OAuthClient
from app.security import rate_limits
from app.security.rate_limits import Hit
from app.services import clients as client_service
from app.services import freshness
from app.services import scopes as scope_rules
from app.services.clients import ClientRecord
from app.services.freshness import CredentialCache

_TOKEN_METHODS_CONFIDENTIAL = {"client_secret_basic", "client_secret_post"}


class Client(ClientMixin):
    """An OAuth client: the ORM row (authorization pages) or a cached record (token endpoint,
    with ``hit``, its request counted against its rate limit)."""

    def __init__(self, model: OAuthClient | ClientRecord, hit: Hit | None = None) -> None:
        self.model = model
        self.hit = hit

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
            requested = scope_rules.expand(scope_rules.parse(scope, protocol=True))
        except scope_rules.ScopeError:
            return None
        if not requested or not requested <= allowed:
            return None
        return scope_rules.to_string(requested)

    @property
    def client_metadata(self) -> dict[str, Any]:
        """What Authlib's end-session endpoint reads: where logout may return the browser (the
        client's redirect URIs count, SPEC §12)."""
        extra = getattr(self.model, "post_logout_redirect_uris", None) or []
        return {"post_logout_redirect_uris": [*self.model.redirect_uris, *extra]}

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.model.redirect_uris  # exact string match, RFC 9700 §4.1.3

    def check_client_secret(self, client_secret: str) -> bool:
        return client_service.check_client_secret(self.model, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.model.is_public:
            return method == "none" and endpoint in ("token", "revocation", "device_authorization")
        return method in _TOKEN_METHODS_CONFIDENTIAL

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.check_grant_type("authorization_code")

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.model.grant_types.split()


def query_client(client_id: str | None) -> Client | None:
    model = client_service.get_active_client(client_id)
    return Client(model) if model is not None else None


_CLIENTS: CredentialCache[ClientRecord] = freshness.new_cache()


def authenticate(client_id: str, secret: str | None) -> Client | None:
    """The client presenting ``secret`` (None: a public client presenting none), with its
    request counted — in one Redis round trip when the record is cached. None if unknown."""
    def usable(record: ClientRecord) -> bool:
        if secret is None:
            return record.is_public
        return client_service.check_client_secret(record, secret)

    record, hit = freshness.resolve(_CLIENTS, client_id, load=lambda: client_service.load_client_record(client_id),
                                    usable=usable, count=rate_limits.count)
    if record is None or hit is None or not usable(record):
        return None
    return Client(record, rate_limits.remember(hit))


def cached_client(client_id: str, secret: str) -> freshness.Entry[ClientRecord] | None:
    """The cache entry of the confidential client presenting ``secret``, if this process has
    it (``freshness.cached``)."""
    return freshness.cached(_CLIENTS, client_id, lambda record: client_service.check_client_secret(record, secret))

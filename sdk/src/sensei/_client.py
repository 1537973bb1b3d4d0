"""``Sensei``: the API client, and its resources."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from sensei._http import BearerAuth, Transport
from sensei.errors import SenseiError
from sensei.oauth import ClientCredentials
from sensei.objects import ApiKey, AuditEvent, Deleted, Introspection, SenseiObject, ServiceAccount

T = TypeVar("T", bound=SenseiObject)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "leave this field as it is" in update(); None means "clear it"


def _time(value: datetime | str | None) -> str | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("expires_at needs a timezone (e.g. datetime(..., tzinfo=timezone.utc))")
        return value.isoformat()
    return value


def _body(**fields: Any) -> dict[str, Any]:
    return {name: _time(value) if isinstance(value, datetime) else value
            for name, value in fields.items() if value is not UNSET}


def _scopes(scopes: Iterable[str] | str | None) -> list[str] | None:
    if scopes is None or scopes is UNSET:
        return scopes
    return scopes.split() if isinstance(scopes, str) else list(scopes)


class Paged(Generic[T]):
    """An iterable over every object of a list: each page is fetched when the last one is used."""

    def __init__(self, transport: Transport, path: str, cls: type[T], params: dict[str, Any]) -> None:
        self._transport, self._path, self._cls, self._params = transport, path, cls, params

    def __iter__(self) -> Iterator[T]:
        params = dict(self._params)
        while True:
            page = self._transport.json("GET", self._path, params=params)
            items = page["data"]
            yield from (self._cls.from_dict(item) for item in items)
            if not page.get("has_more") or not items:
                return
            params["starting_after"] = items[-1]["id"]


class _Resource:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport


class ApiKeys(_Resource):
    def create(self, *, name: str, scopes: Iterable[str] | str, expires_at: datetime | str | None = None,
               ip_whitelist: Iterable[str] | None = None, service_account_id: str | None = None,
               environment: str | None = None) -> ApiKey:
        """A new key; ``.key`` holds the secret, shown this once."""
        body = _body(name=name, scopes=_scopes(scopes), expires_at=expires_at,
                     ip_whitelist=list(ip_whitelist) if ip_whitelist is not None else None,
                     service_account_id=service_account_id, environment=environment)
        return ApiKey.from_dict(self._transport.json("POST", "/v1/api-keys",
                                                     json={k: v for k, v in body.items() if v is not None}))

    def list(self, *, limit: int = 100) -> Paged[ApiKey]:
        return Paged(self._transport, "/v1/api-keys", ApiKey, {"limit": limit})

    def retrieve(self, key_id: str) -> ApiKey:
        return ApiKey.from_dict(self._transport.json("GET", f"/v1/api-keys/{key_id}"))

    def update(self, key_id: str, *, name: str = UNSET, scopes: Iterable[str] | str = UNSET,
               expires_at: datetime | str | None = UNSET, ip_whitelist: Iterable[str] | None = UNSET) -> ApiKey:
        body = _body(name=name, scopes=_scopes(scopes), expires_at=expires_at,
                     ip_whitelist=list(ip_whitelist) if ip_whitelist not in (UNSET, None) else ip_whitelist)
        return ApiKey.from_dict(self._transport.json("PATCH", f"/v1/api-keys/{key_id}", json=body))

    def delete(self, key_id: str) -> Deleted:
        return Deleted.from_dict(self._transport.json("DELETE", f"/v1/api-keys/{key_id}"))


class ServiceAccounts(_Resource):
    def create(self, *, name: str | None = None, scopes: Iterable[str] | str | None = None,
               description: str | None = None, ip_whitelist: Iterable[str] | None = None,
               yaml_file: str | os.PathLike[str] | None = None) -> ServiceAccount:
        """From fields, or from a YAML file (``name``, ``description``, ``scopes``,
        ``ip_whitelist``, as in the product documentation). ``.client_secret`` is shown this once."""
        if yaml_file is not None:
            if name is not None or scopes is not None:
                raise ValueError("pass either yaml_file or the fields, not both")
            answer = self._transport.json("POST", "/v1/service-accounts", content=Path(yaml_file).read_bytes(),
                                          headers={"Content-Type": "application/yaml"})
            return ServiceAccount.from_dict(answer)
        if name is None or scopes is None:
            raise ValueError("name and scopes are required (or pass yaml_file)")
        body = _body(name=name, scopes=_scopes(scopes), description=description,
                     ip_whitelist=list(ip_whitelist) if ip_whitelist is not None else None)
        return ServiceAccount.from_dict(self._transport.json(
            "POST", "/v1/service-accounts", json={k: v for k, v in body.items() if v is not None}))

    def list(self, *, limit: int = 100) -> Paged[ServiceAccount]:
        return Paged(self._transport, "/v1/service-accounts", ServiceAccount, {"limit": limit})

    def retrieve(self, account_id: str) -> ServiceAccount:
        return ServiceAccount.from_dict(self._transport.json("GET", f"/v1/service-accounts/{account_id}"))

    def update(self, account_id: str, *, name: str = UNSET, scopes: Iterable[str] | str = UNSET,
               description: str | None = UNSET, ip_whitelist: Iterable[str] | None = UNSET) -> ServiceAccount:
        body = _body(name=name, scopes=_scopes(scopes), description=description,
                     ip_whitelist=list(ip_whitelist) if ip_whitelist not in (UNSET, None) else ip_whitelist)
        return ServiceAccount.from_dict(self._transport.json("PATCH", f"/v1/service-accounts/{account_id}",
                                                             json=body))

    def delete(self, account_id: str) -> Deleted:
        return Deleted.from_dict(self._transport.json("DELETE", f"/v1/service-accounts/{account_id}"))


class AuditLogs(_Resource):
    def list(self, *, action: str | None = None, actor_id: str | None = None, result: str | None = None,
             since: datetime | str | None = None, until: datetime | str | None = None,
             limit: int = 100) -> Paged[AuditEvent]:
        """Newest first, every page fetched as it is reached."""
        params = {name: value for name, value in {"action": action, "actor_id": actor_id, "result": result,
                                                   "since": _time(since), "until": _time(until),
                                                   "limit": limit}.items() if value is not None}
        return Paged(self._transport, "/v1/audit-logs", AuditEvent, params)


class Tokens(_Resource):
    """Introspection (RFC 7662) and revocation (RFC 7009), authenticated like the client."""

    def __init__(self, transport: Transport, client_auth: tuple[str, str] | None) -> None:
        super().__init__(transport)
        self._client_auth = client_auth  # client credentials authenticate as the client (Basic)

    def introspect(self, token: str) -> Introspection:
        answer = self._transport.json("POST", "/oauth/introspect", data={"token": token}, auth=self._client_auth)
        return Introspection.from_dict(answer)

    def revoke(self, token: str) -> None:
        self._transport.request("POST", "/oauth/revoke", data={"token": token}, auth=self._client_auth)


class Sensei:
    """The Sensei Auth API, authenticated with an API key or with OAuth client credentials.

    ``base_url``: the argument, else ``SENSEI_BASE_URL``, else ``http://127.0.0.1:8000``.
    A 429 is retried after ``Retry-After`` up to ``max_retries`` times.
    """

    def __init__(self, api_key: str | None = None, *, client_id: str | None = None,
                 client_secret: str | None = None, scopes: Iterable[str] | str | None = None,
                 base_url: str | None = None, timeout: float = 10.0, max_retries: int = 3,
                 http_client: httpx.Client | None = None) -> None:
        auth: httpx.Auth
        client_auth: tuple[str, str] | None = None
        self.session: ClientCredentials | None = None
        if client_id is not None or client_secret is not None:
            if api_key is not None or not (client_id and client_secret):
                raise SenseiError("pass either api_key, or client_id and client_secret")
            auth = self.session = ClientCredentials(client_id, client_secret, scopes, base_url=base_url,
                                                    timeout=timeout, max_retries=max_retries, http_client=http_client)
            client_auth = (client_id, client_secret)
        else:
            api_key = api_key or os.environ.get("SENSEI_API_KEY")
            if not api_key:
                raise SenseiError("no credential: pass api_key= (or set SENSEI_API_KEY), or client_id= and "
                                  "client_secret=")
            auth = BearerAuth(api_key)
        self._transport = Transport(base_url=base_url, auth=auth, timeout=timeout, max_retries=max_retries,
                                    http_client=http_client)
        self.api_keys = ApiKeys(self._transport)
        self.service_accounts = ServiceAccounts(self._transport)
        self.audit_logs = AuditLogs(self._transport)
        self.tokens = Tokens(self._transport, client_auth)

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    def me(self) -> dict[str, Any]:
        """``GET /v1/me``: the organization, principal and scopes behind this credential."""
        return self._transport.json("GET", "/v1/me")

    def close(self) -> None:
        self._transport.close()
        if self.session is not None:
            self.session.close()

    def __enter__(self) -> Sensei:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

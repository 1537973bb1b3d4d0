"""An OAuth 2.0 client-credentials session that fetches and renews its own access token."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable
from typing import Any

import httpx

from sensei._http import Transport

RENEW_BEFORE = 30.0  # seconds before expiry at which a token is renewed


class ClientCredentials(httpx.Auth):
    """Tokens from ``POST /oauth/token`` (``grant_type=client_credentials``, HTTP Basic client
    authentication), kept until 30 s before they expire, fetched again after a 401 (a revoked
    token). Use it as the ``auth`` of any httpx request, or call ``request``/``get``/``post``."""

    def __init__(self, client_id: str, client_secret: str, scopes: Iterable[str] | str | None = None, *,
                 base_url: str | None = None, timeout: float = 10.0, max_retries: int = 3,
                 http_client: httpx.Client | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = scopes.split() if isinstance(scopes, str) else list(scopes or [])
        self.transport = Transport(base_url=base_url, auth=None, timeout=timeout, max_retries=max_retries,
                                   http_client=http_client)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    def token(self) -> str:
        """A current access token (fetched or renewed if needed)."""
        with self._lock:
            if self._token is None or time.monotonic() > self._expires - RENEW_BEFORE:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> None:
        data = {"grant_type": "client_credentials"}
        if self.scopes:
            data["scope"] = " ".join(self.scopes)
        answer = self.transport.json("POST", "/oauth/token", data=data, auth=(self.client_id, self.client_secret))
        self._token = answer["access_token"]
        self._expires = time.monotonic() + float(answer.get("expires_in", 60))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401:  # revoked or expired early: one fresh token, one retry
            self.invalidate()
            request.headers["Authorization"] = f"Bearer {self.token()}"
            yield request

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A call to any API that accepts Sensei's tokens (a path is relative to ``base_url``)."""
        return self.transport.request(method, url, auth=self, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> ClientCredentials:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

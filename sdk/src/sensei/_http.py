"""The HTTP layer: base URL, user agent, credentials, 429 retries and error mapping."""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import Any

import httpx

from sensei._version import __version__
from sensei.errors import BY_CODE, BY_STATUS, APIConnectionError, RateLimitError, SenseiError

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
USER_AGENT = f"sensei-sdk/{__version__}"
MAX_RETRY_WAIT = 60.0  # never sleep longer than this for one Retry-After


def base_url_of(base_url: str | None) -> str:
    """The argument, else ``SENSEI_BASE_URL``, else the local development server."""
    return (base_url or os.environ.get("SENSEI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def error_from(response: httpx.Response) -> SenseiError:
    """The SenseiError for an error answer: the /v1 envelope or an RFC 6749 error body."""
    code = message = param = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # {"error": {"code", "message", "param"}}
            code, message, param = error.get("code"), error.get("message"), error.get("param")
        elif isinstance(error, str):  # {"error": "invalid_client", "error_description": "..."}
            code, message = error, body.get("error_description")
    cls = BY_CODE.get(code or "") or BY_STATUS.get(response.status_code) or SenseiError
    failure = cls(message or f"HTTP {response.status_code}", code=code, param=param, status=response.status_code,
                  request_id=response.headers.get("X-Request-Id"))
    if isinstance(failure, RateLimitError):
        failure.retry_after = retry_after(response)
    return failure


def retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


class BearerAuth(httpx.Auth):
    def __init__(self, credential: str) -> None:
        self.credential = credential

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.credential}"
        yield request


class Transport:
    """One httpx client: every call carries the user agent and the credential; a 429 is
    retried after ``Retry-After`` up to ``max_retries`` times (as the product documentation's
    retry loop does), then raised as ``RateLimitError``."""

    def __init__(self, *, base_url: str | None, auth: httpx.Auth | None, timeout: float = 10.0,
                 max_retries: int = 3, http_client: httpx.Client | None = None) -> None:
        self.base_url = base_url_of(base_url)
        self.auth = auth
        self.max_retries = max_retries
        self.client = http_client or httpx.Client(timeout=timeout)

    def request(self, method: str, path: str, *, auth: httpx.Auth | tuple[str, str] | None = None,
                **kwargs: Any) -> httpx.Response:
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **kwargs.pop("headers", {})}
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.request(method, url, headers=headers, auth=auth or self.auth or httpx.USE_CLIENT_DEFAULT,
                                               **kwargs)
            except httpx.TransportError as error:
                raise APIConnectionError(f"Could not reach {self.base_url}: {type(error).__name__}") from error
            if response.status_code == 429 and attempt < self.max_retries:
                time.sleep(min(retry_after(response), MAX_RETRY_WAIT))
                continue
            if response.is_error:
                raise error_from(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def close(self) -> None:
        self.client.close()

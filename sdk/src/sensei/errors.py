"""Errors raised by the SDK: one class per error code of the /v1 envelope."""

from __future__ import annotations


class SenseiError(Exception):
    """Any error answer of Sensei Auth (or no answer at all: ``status`` is then None)."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None,
                 status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.status = status
        self.request_id = request_id

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={self.message!r}, "
                f"param={self.param!r}, request_id={self.request_id!r})")


class AuthenticationError(SenseiError):
    """401 ``unauthorized``: a missing, malformed, expired or revoked credential."""


class PermissionDeniedError(SenseiError):
    """403 ``forbidden``: a valid credential without the scope, or from an address not allowed."""


class NotFoundError(SenseiError):
    """404 ``not_found``."""


class InvalidRequestError(SenseiError):
    """400 ``invalid_request``; ``param`` names the offending field."""


class RateLimitError(SenseiError):
    """429 ``rate_limited``, still refused after the retries; ``retry_after`` in seconds."""

    retry_after: float | None = None


class APIConnectionError(SenseiError):
    """The server could not be reached (or did not answer in time)."""


BY_CODE: dict[str, type[SenseiError]] = {
    "unauthorized": AuthenticationError,
    "invalid_client": AuthenticationError,
    "invalid_token": AuthenticationError,
    "forbidden": PermissionDeniedError,
    "not_found": NotFoundError,
    "invalid_request": InvalidRequestError,
    "rate_limited": RateLimitError,
}
BY_STATUS: dict[int, type[SenseiError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    429: RateLimitError,
}

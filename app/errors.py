"""Error shapes, one place: the /v1 envelope (SPEC §9), RFC 6749 JSON for /oauth, HTML for pages."""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("sensei")

STATUS_CODES = {
    "invalid_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "https_required": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "internal_error": 500,
    "service_unavailable": 503,
}
_HTTP_TO_CODE = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "service_unavailable",
}
_OAUTH_PASSTHROUGH = {"https_required", "rate_limited"}
_OAUTH_HTTP_TO_ERROR = {405: "invalid_request", 413: "invalid_request", 415: "invalid_request"}


class ApiError(Exception):
    """A failure a caller can act on. ``message`` is shown to the client; never put a secret in it."""

    def __init__(self, code: str, message: str, *, param: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.status = status or STATUS_CODES[code]


def envelope(code: str, message: str, status: int, *, param: str | None = None):
    body: dict = {
        "code": code,
        "message": message,
        "documentation_url": f"{current_app.config['SETTINGS'].DOCS_URL}/errors#{code}",
    }
    if param is not None:
        body["param"] = param
    response = jsonify({"error": body})
    response.status_code = status
    return response


def oauth_error(error: str, description: str, status: int = 400):
    """RFC 6749 §5.2 error body with the no-store headers of §5.1."""
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _surface() -> str:
    path = request.path
    if path == "/v1" or path.startswith(("/v1/", "/gateway/")):
        return "api"
    if path.startswith("/oauth/") and path not in ("/oauth/authorize", "/oauth/logout"):
        return "oauth"
    if path.startswith("/.well-known/"):
        return "oauth"
    return "page"


def _page_error(status: int, title: str, message: str):
    return render_template("error.html", title=title, message=message), status


def handle_api_error(error: ApiError):
    if _surface() == "oauth":
        code = error.code if error.code in _OAUTH_PASSTHROUGH else "invalid_request"
        return oauth_error(code if error.status < 500 else "server_error", error.message, error.status)
    if _surface() == "page":
        return _page_error(error.status, "Request refused", error.message)
    return envelope(error.code, error.message, error.status, param=error.param)


def handle_http_exception(error: HTTPException):
    status = error.code or 500
    surface = _surface()
    if surface == "api":
        code = _HTTP_TO_CODE.get(status, "invalid_request" if status < 500 else "internal_error")
        message = {
            404: "No such route: check the URL and method",
            405: f"Method {request.method} is not allowed on this route",
            413: "Request body is too large",
        }.get(status, error.description or "Request refused")
        response = envelope(code, message, status)
    elif surface == "oauth":
        description = "Request body is too large" if status == 413 else (error.description or "Request refused")
        response = oauth_error(_OAUTH_HTTP_TO_ERROR.get(status, "invalid_request"), description, status)
        if status == 404:
            response = oauth_error("not_found", "No such endpoint", 404)
    else:
        response = _page_error(status, error.name, error.description or "")
        response = current_app.make_response(response)
    if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


def handle_database_unavailable(error: DBAPIError):
    log.error("database unavailable: %s", type(error.orig).__name__ if error.orig else type(error).__name__)
    return _failure(503, "service_unavailable", "The service is temporarily unavailable; retry shortly")


def handle_unexpected(error: Exception):
    if isinstance(error, OperationalError):
        return handle_database_unavailable(error)
    log.exception("unhandled error")
    return _failure(500, "internal_error", "An internal error occurred")


def _failure(status: int, code: str, message: str):
    surface = _surface()
    if surface == "api":
        return envelope(code, message, status)
    if surface == "oauth":
        return oauth_error("server_error" if status == 500 else "temporarily_unavailable", message, status)
    return _page_error(status, "Something went wrong", message)


def register_errorhandlers(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)

"""Request ids and structured logs: one JSON object per line, never a secret.

The access line records method, path (without the query string, which may carry an
authorization request's state), status and duration, tagged with the request id.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time

from flask import Flask, g, request

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging() -> None:
    logger = logging.getLogger("sensei")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def register_request_logging(app: Flask) -> None:
    configure_logging()
    access = logging.getLogger("sensei.access")

    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if REQUEST_ID_RE.match(incoming) else f"req_{secrets.token_hex(12)}"
        g.started_at = time.perf_counter()

    @app.after_request
    def tag_response(response):
        request_id = g.get("request_id") or f"req_{secrets.token_hex(12)}"
        response.headers["X-Request-Id"] = request_id
        started = g.get("started_at")
        access.info(
            "request",
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path[:200],
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
            },
        )
        return response


def request_audit_context(actor_type: str, actor_id: str | None, actor_name: str):
    """An audit context for the current request: the actor plus its address and user agent."""
    from app.services.audit import AuditContext

    return AuditContext(
        actor_type=actor_type,
        actor_id=actor_id,
        actor_name=actor_name,
        ip_address=request.remote_addr,
        user_agent=request.headers.get("User-Agent"),
    )

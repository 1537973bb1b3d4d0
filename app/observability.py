"""Request ids and structured logs: one JSON object per line, never a secret.

The access line records method, path (without the query string, which may carry an
authorization request's state), status and duration, tagged with the request id.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
import threading
import time

from flask import Flask, g, request
from sqlalchemy import event
from sqlalchemy.engine import Engine

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
        if access.isEnabledFor(logging.INFO):
            # A record made directly: Logger.info would walk the stack for a caller the
            # line never shows, on every request.
            access.handle(access.makeRecord(access.name, logging.INFO, __name__, 0, "request", None, None, extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path[:200],
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
            }))
        return response


class RoundTrips:
    """Database statements and Redis commands per request (bench mode, SENSEI_BENCH_ROUND_TRIPS=1):
    each response says how many its own thread made, and the process's totals over every
    thread (the audit writer's batches included)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.requests = self.db = self.redis = 0

    def reset(self) -> None:
        self._local.db = self._local.redis = 0
        self.requests += 1

    def count_db(self, *_args) -> None:
        self.db += 1
        self._local.db = getattr(self._local, "db", 0) + 1

    def count_begin(self, connection) -> None:
        if connection.dialect.name == "postgresql":  # psycopg sends BEGIN on its own
            self.count_db()

    def count_redis(self) -> None:
        self.redis += 1
        self._local.redis = getattr(self._local, "redis", 0) + 1

    def header(self) -> str:
        return (f"db={getattr(self._local, 'db', 0)}; redis={getattr(self._local, 'redis', 0)}; pid={os.getpid()}; "
                f"total_requests={self.requests}; total_db={self.db}; total_redis={self.redis}")


round_trips: RoundTrips | None = None


def register_round_trip_counting(app: Flask) -> None:
    """Count round trips when the bench asks for it: statements and commits on every engine
    (PostgreSQL's implicit BEGIN too), Redis commands in ``RedisCounters``."""
    global round_trips
    if not app.config["SETTINGS"].BENCH_ROUND_TRIPS:
        return
    if round_trips is None:
        round_trips = RoundTrips()
        counter = round_trips
        event.listen(Engine, "before_cursor_execute", counter.count_db)
        event.listen(Engine, "commit", counter.count_db)
        event.listen(Engine, "begin", counter.count_begin)
    counter = round_trips

    @app.before_request
    def start_counting() -> None:
        counter.reset()

    @app.after_request
    def report_round_trips(response):
        response.headers["X-Sensei-Round-Trips"] = counter.header()
        return response


def count_redis() -> None:
    if round_trips is not None:
        round_trips.count_redis()


def principal_audit_context(principal):
    """An audit context for the current request acting as ``principal``."""
    return request_audit_context(principal.type, principal.id, principal.name)


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

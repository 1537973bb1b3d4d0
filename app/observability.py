"""Request ids and structured logs: one JSON object per line, never a secret.

The access line records method, path (without the query string, which may carry an
authorization request's state), status and duration, tagged with the request id.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time

from flask import Flask, request
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.metrics import RequestMetrics, RoutedRequest, route_of
from app.models.base import id_entropy
from app.services.audit import AuditContext

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


class AccessLog:
    """The access line of a request, exactly as ``JsonFormatter`` writes it.

    With the logging set up by ``configure_logging`` the line goes straight to its handler's
    stream: a LogRecord, the handler chain and the formatter cost about a tenth of a hot
    request. Any other set-up (handlers or filters added, propagation turned on) gets a real
    record through ``logging``, so a deployment's own configuration still applies.
    """

    def __init__(self) -> None:
        configure_logging()
        self.logger = logging.getLogger("sensei.access")
        self.parent = logging.getLogger("sensei")
        self.handler = self.parent.handlers[0]
        self._second = -1
        self._ts = ""

    def _direct_stream(self):
        logger, parent, handler = self.logger, self.parent, self.handler
        if (logger.handlers or logger.filters or not logger.propagate or parent.propagate or parent.filters
                or parent.handlers != [handler] or handler.filters or type(handler.formatter) is not JsonFormatter):
            return None
        return getattr(handler, "stream", None)

    def write(self, request_id: str, method: str, path: str, status: int | None, duration_ms: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        stream = self._direct_stream()
        if stream is None:
            logger.handle(logger.makeRecord(logger.name, logging.INFO, __name__, 0, "request", (), None, extra={
                "request_id": request_id, "method": method, "path": path, "status": status,
                "duration_ms": duration_ms}))
            return
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        line = (f'{{"ts": "{self._ts}", "level": "info", "logger": "sensei.access", "message": "request", '
                f'"request_id": {_quoted(request_id)}, "method": {_quoted(method)}, "path": {_quoted(path)}, '
                f'"status": {"null" if status is None else status}, "duration_ms": {duration_ms!r}}}\n')
        with self.handler.lock:  # type: ignore[union-attr]
            stream.write(line)
            stream.flush()


_quoted = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]  # what json.dumps uses for a str


class RequestEdge:
    """WSGI middleware at the edge of every request: it gives the request its id (a sane
    incoming ``X-Request-Id`` or a new one), sends it back, adds the headers the app leaves
    in the environ (``RESPONSE_HEADERS``: rate-limit headers, round-trip counts), writes
    the access line and counts the request in the metrics. Done here rather than in Flask hooks: on the hot paths a hook's
    dispatch costs more than its work."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app
        self.access = AccessLog()
        self.metrics = RequestMetrics()

    def __call__(self, environ, start_response):
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else f"req_{id_entropy.take(12).hex()}"
        started = time.perf_counter()
        status_line = ""

        def start(status, headers, exc_info=None):
            nonlocal status_line
            status_line = status
            headers.append(("X-Request-Id", request_id))
            for group in environ.get(RESPONSE_HEADERS, {}).values():
                headers.extend(group.items())
            return start_response(status, headers, exc_info)

        body = self.wsgi_app(environ, start)
        elapsed = time.perf_counter() - started
        status = int(status_line[:3]) if status_line[:3].isdigit() else None
        method = environ.get("REQUEST_METHOD", "")
        self.access.write(request_id, method, _path(environ)[:200], status, round(elapsed * 1000, 2))
        self.metrics.record(route_of(environ), method, status or 0, elapsed)
        return body


RESPONSE_HEADERS = "sensei.response_headers"


def set_response_headers(environ, group: str, headers: dict[str, str]) -> None:
    """Headers for ``RequestEdge`` to add to this request's response, whatever it is; a
    later call for the same ``group`` replaces the earlier one's headers."""
    environ.setdefault(RESPONSE_HEADERS, {})[group] = headers


def _path(environ) -> str:
    """The path as the app sees it (what Werkzeug decodes), without the query string."""
    raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def register_request_edge(app: Flask) -> None:
    app.request_class = RoutedRequest  # the route label of the request metrics
    app.wsgi_app = RequestEdge(app.wsgi_app)  # type: ignore[method-assign]


class RoundTrips:
    """Database statements and Redis commands per request (bench mode, SENSEI_BENCH_ROUND_TRIPS=1):
    each response says how many its own thread made, and the process's totals over every
    thread (the audit writer's batches included)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.requests = self.db = self.redis = 0
        self.pid = os.getpid()  # read once: getpid is a system call
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self.pid = os.getpid()
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
        return (f"db={getattr(self._local, 'db', 0)}; redis={getattr(self._local, 'redis', 0)}; pid={self.pid}; "
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
    app.wsgi_app = RoundTripHeader(app.wsgi_app, round_trips)  # type: ignore[method-assign]


class RoundTripHeader:
    """WSGI middleware of the bench mode: ``X-Sensei-Round-Trips`` on every response."""

    def __init__(self, wsgi_app, counter: RoundTrips) -> None:
        self.wsgi_app = wsgi_app
        self.counter = counter

    def __call__(self, environ, start_response):
        counter = self.counter
        counter.reset()

        def start(status, headers, exc_info=None):
            headers.append(("X-Sensei-Round-Trips", counter.header()))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def count_redis() -> None:
    if round_trips is not None:
        round_trips.count_redis()


def principal_audit_context(principal, environ=None):
    """An audit context for the current request (or ``environ``'s) acting as ``principal``."""
    return request_audit_context(principal.type, principal.id, principal.name, environ)


def request_audit_context(actor_type: str, actor_id: str | None, actor_name: str, environ=None):
    """An audit context for the current request (or ``environ``'s): the actor plus its
    address and user agent."""
    if environ is None:
        environ = request.environ  # what request.remote_addr and the User-Agent header read
    return AuditContext(actor_type, actor_id, actor_name, environ.get("REMOTE_ADDR"), environ.get("HTTP_USER_AGENT"))

"""Prometheus metrics (``GET /metrics``): requests by route and status, latency, tokens issued
by grant, authentication failures, rate-limit rejections and the audit writer's backlog.

Under gunicorn each worker is a process of its own: with ``PROMETHEUS_MULTIPROC_DIR`` set
before the server starts (``sensei serve`` does it, see ``app/gunicorn_conf.py``) every
worker writes its values to files there and ``/metrics`` adds them up; without it a scrape
sees the worker that answered. ``/metrics`` answers a caller on this host (127.0.0.1 or
::1) that came directly (no X-Forwarded-For: not through a proxy), or anyone presenting ``SENSEI_METRICS_TOKEN`` as a bearer
token; anything else gets 404.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from flask import Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("sensei_http_requests_total", "HTTP requests answered, by route template, method and status.",
                   ["route", "method", "status"])
LATENCY = Histogram("sensei_http_request_duration_seconds", "Time to answer, by route template and method.",
                    ["route", "method"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
TOKENS_ISSUED = Counter("sensei_tokens_issued_total", "Access tokens issued, by grant type.", ["grant"])
AUTH_FAILURES = Counter("sensei_authentication_failures_total",
                        "Failed authentications, by surface (api: Bearer on /v1 and the gateway check, "
                        "oauth_client: client authentication, login: password sign-in).", ["surface"])
RATE_LIMITED = Counter("sensei_rate_limit_rejections_total", "Requests refused with 429, by route template.",
                       ["route"])
AUDIT_BACKLOG = Gauge("sensei_audit_backlog", "Audit entries accepted but not yet written, summed over the "
                                              "live processes.", multiprocess_mode="livesum")

THIS_HOST = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
UNMATCHED = "(unmatched)"  # a path no route matched: one label value, not one per path sent


class RequestMetrics:
    """What ``RequestEdge`` records per response; the labelled children are kept, so a request
    costs a dictionary lookup and the increments."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], tuple] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._counters.get((route, method, status))
        if children is None:
            children = self._counters[(route, method, status)] = (
                REQUESTS.labels(route, method, str(status)),
                LATENCY.labels(route, method),
                RATE_LIMITED.labels(route) if status == 429 else None,
            )
        requests, latency, limited = children
        requests.inc()
        latency.observe(seconds)
        if limited is not None:
            limited.inc()


ROUTE = "sensei.route"


class RoutedRequest(Request):
    """Flask's request, leaving the URL rule it matched in the environ, where ``RequestEdge``
    reads it after Flask has let go of the request."""

    _rule = None

    @property  # type: ignore[override]
    def url_rule(self):
        return self._rule

    @url_rule.setter
    def url_rule(self, rule) -> None:
        self._rule = rule
        self.environ[ROUTE] = rule.rule if rule is not None else UNMATCHED


def route_of(environ) -> str:
    """The URL rule that served the request (``/v1/api-keys/<key_id>``), or ``UNMATCHED``."""
    return environ.get(ROUTE, UNMATCHED)


def exposition() -> tuple[bytes, str]:
    """The text format: every worker's values when multiprocess, else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def may_scrape(environ, token: str | None) -> bool:
    """A direct caller on this host (no proxy in between), or the configured bearer token."""
    if token:
        scheme, _, presented = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
            return True
    if "HTTP_X_FORWARDED_FOR" in environ or "HTTP_FORWARDED" in environ:
        return False
    peer = environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR") or environ.get("REMOTE_ADDR", "")
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return (getattr(address, "ipv4_mapped", None) or address) in THIS_HOST


def worker_exited(pid: int) -> None:
    """gunicorn's ``child_exit``: drop a dead worker's live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


def authentication_failed(surface: str) -> None:
    AUTH_FAILURES.labels(surface).inc()


def token_issued(grant: str) -> None:
    TOKENS_ISSUED.labels(grant).inc()

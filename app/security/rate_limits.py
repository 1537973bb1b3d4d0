"""Rate limiting (SPEC §8) on the ``limits`` library: fixed windows per second and per day.

Counters live in Redis when ``SENSEI_REDIS_URL`` is set — exact across workers and hosts —
and in process memory otherwise (then each process counts on its own). Every credential
has its own bucket (API key, OAuth client, service account, user; the client address for
anonymous calls), sized by its organization's tier.

When Redis is unreachable the API fails *open* (requests pass, the error is logged and
``/healthz`` reports ``degraded``) so an outage of the cache does not take the API down;
login throttling fails *closed* (``LimiterUnavailable``), because there the limit is the
only thing between an attacker and password guessing.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import cast

from flask import Flask, current_app, g
from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.storage import Storage, storage_from_string

log = logging.getLogger("sensei.rate_limits")


@dataclass(frozen=True)
class Quota:
    per_second: int
    per_day: int


TIER_QUOTAS = {
    "free": Quota(10, 1_000),
    "starter": Quota(50, 50_000),
    "professional": Quota(200, 500_000),
}
LOGIN_PER_ACCOUNT_PER_DAY = 100


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int | None = None
    remaining: int | None = None
    reset: int | None = None  # Unix seconds
    retry_after: int | None = None

    def headers(self) -> dict[str, str]:
        if self.limit is None:
            return {}
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


UNLIMITED = Decision(allowed=True)


class LimiterUnavailable(RuntimeError):
    """The shared counters cannot be reached (Redis down)."""


class RateLimiter:
    def __init__(self, redis_url: str | None, *, prefix: str = "sensei", anonymous: Quota = TIER_QUOTAS["free"],
                 login_per_address: int = 10, login_per_account: int = 5) -> None:
        self.anonymous = anonymous
        # Sign-in: each attempt costs an argon2 verification (~6 a second per core), so
        # attempts are counted before the password is checked.
        self.login_per_address = RateLimitItemPerMinute(login_per_address)
        self.login_per_account = [RateLimitItemPerMinute(login_per_account),
                                  RateLimitItemPerDay(LOGIN_PER_ACCOUNT_PER_DAY)]
        self.shared = bool(redis_url)
        self.storage: Storage
        if redis_url:
            self.storage = cast(Storage, storage_from_string(redis_url, key_prefix=prefix, socket_timeout=0.5,
                                                             socket_connect_timeout=0.5))
        else:
            self.storage = cast(Storage, storage_from_string("memory://"))

    def storage_reachable(self) -> bool:
        try:
            return bool(self.storage.check())
        except Exception:
            return False

    def _count(self, item: RateLimitItem, bucket: str) -> tuple[int, float]:
        """Count one hit; return (hits in this window, window reset time)."""
        key = item.key_for(bucket)
        try:
            hits = self.storage.incr(key, item.get_expiry())
            reset = self.storage.get_expiry(key)
        except Exception as error:  # any storage failure: redis errors, timeouts
            log.error("rate-limit storage unavailable: %s", type(error).__name__)
            raise LimiterUnavailable from None
        return hits, reset

    def _decide(self, items: list[RateLimitItem], bucket: str) -> Decision:
        now = time.time()
        nearest: Decision | None = None
        for item in items:  # the per-second window first: a refused burst costs no daily quota
            hits, reset = self._count(item, bucket)
            remaining = max(0, item.amount - hits)
            decision = Decision(allowed=hits <= item.amount, limit=item.amount, remaining=remaining,
                                reset=math.ceil(reset))
            if not decision.allowed:
                retry = max(1, math.ceil(reset - now))
                return Decision(False, item.amount, 0, math.ceil(reset), retry)
            if nearest is None or remaining < (nearest.remaining or 0):
                nearest = decision
        assert nearest is not None
        return nearest

    def check(self, bucket: str, quota: Quota | None) -> Decision:
        """API limits: fail open when the storage is down."""
        if quota is None:
            return UNLIMITED
        try:
            return self._decide([RateLimitItemPerSecond(quota.per_second), RateLimitItemPerDay(quota.per_day)],
                                bucket)
        except LimiterUnavailable:
            return UNLIMITED

    def check_login(self, *, address: str | None, email: str) -> bool:
        """Sign-in attempts: fail closed (raises LimiterUnavailable) when the storage is down."""
        by_address = self._decide([self.login_per_address], f"login-ip:{address}")
        if not by_address.allowed:
            return False
        return self._decide(self.login_per_account, f"login-account:{email.strip().lower()[:254]}").allowed


def quota_for(tier: str, per_second: int | None, per_day: int | None) -> Quota | None:
    """The tier's quota; Enterprise uses the organization's own limits, unlimited until set."""
    if tier == "enterprise":
        if per_second is None or per_day is None:
            return None
        return Quota(per_second, per_day)
    return TIER_QUOTAS.get(tier, TIER_QUOTAS["free"])


def limiter() -> RateLimiter:
    return current_app.extensions["sensei.limiter"]


def enforce_anonymous(address: str | None) -> Decision:
    """Count a call without valid credentials against its address."""
    return enforce(f"ip:{address}", limiter().anonymous)


def enforce(bucket: str, quota: Quota | None) -> Decision:
    """Count a request against ``bucket``; remember the decision for the response headers."""
    decision = limiter().check(bucket, quota)
    g.rate_limit = decision
    return decision


def register_rate_limit_headers(app: Flask) -> None:
    @app.after_request
    def rate_limit_headers(response):
        decision = g.get("rate_limit")
        if decision is not None:
            response.headers.update(decision.headers())
        return response
